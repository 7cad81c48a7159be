//! A SOCKS 5 client's bytes as the proxy reads them: each decoder gives a
//! clear error or a message that took no more bytes than given and no
//! more than the format's maximum; a need for more bytes is a positive
//! count; and every error a request can earn names a reply code or none,
//! never a panic.
#![no_main]

use fogwire_exit_proto::socks::{
    self, Credentials, Greeting, Request, SocksError, UdpHeader,
};
use libfuzzer_sys::fuzz_target;

fn check<T>(input: &[u8], max: usize, result: Result<(T, usize), SocksError>) {
    match result {
        Ok((_, len)) => assert!(len <= input.len() && len <= max),
        Err(SocksError::Incomplete(more)) => assert!(more > 0),
        Err(error) => {
            let _ = error.reply_code();
        }
    }
}

fuzz_target!(|input: &[u8]| {
    check(input, socks::GREETING_LEN_MAX, Greeting::decode(input));
    check(input, socks::CREDENTIALS_LEN_MAX, Credentials::decode(input));
    check(input, socks::REQUEST_LEN_MAX, Request::decode(input));
    check(input, socks::UDP_HEADER_LEN_MAX, UdpHeader::decode(input));
    if let Ok((greeting, _)) = Greeting::decode(input) {
        let method = greeting.choose();
        assert!(method == socks::METHOD_REFUSED || greeting.methods.contains(&method));
    }
});
