//! The secret every control API request presents.

use std::fmt;

/// The control API's token: 32 random bytes, written as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    const HEX_LEN: usize = 64;

    /// A new random token.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(hex::encode(bytes)))
    }

    /// A token as written in its file; `None` if it is not 64 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == Self::HEX_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in constant time, so response timing reveals nothing about
    /// how much of a guess was right.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        presented.len() == self.0.len() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_checked_in_full_and_never_printed() {
        let token = ApiToken::generate().unwrap();
        assert_eq!(ApiToken::parse(token.as_str()), Some(token.clone()));
        assert!(token.matches(token.as_str()));
        assert!(!token.matches(&token.as_str()[..63]));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains(token.as_str()));
        assert_eq!(ApiToken::parse("xyz"), None);
    }
}
