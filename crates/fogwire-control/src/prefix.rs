//! Ids and hashes named by a prefix: the short form fogwire prints (`fw1…`,
//! `9280f3a1b2c3…`) or any start of the full form, taken back wherever an
//! id or hash is taken, if exactly one candidate has it.

use axum::http::StatusCode;

use crate::server::Refusal;

/// The one candidate whose printed form starts with `text` (a short
/// form's `…` dropped); `what` names the kind, `listed_by` the command
/// that lists them.
pub(crate) fn unique<T>(
    text: &str,
    candidates: impl IntoIterator<Item = (String, T)>,
    what: &str,
    listed_by: &str,
) -> Result<T, Refusal> {
    let prefix = fogwire_identity::prefix_of(text).to_ascii_lowercase();
    if prefix.is_empty() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("no {what} given; `{listed_by}` lists them"),
        ));
    }
    let mut found: Vec<T> = candidates
        .into_iter()
        .filter(|(printed, _)| printed.starts_with(&prefix))
        .map(|(_, candidate)| candidate)
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Refusal(
            StatusCode::NOT_FOUND,
            format!("no {what} here starts with `{prefix}`; `{listed_by}` lists them"),
        )),
        many => Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("{many} {what}s start with `{prefix}`: give more of it"),
        )),
    }
}
