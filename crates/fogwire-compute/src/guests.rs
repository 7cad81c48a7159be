//! Guest programs built from the WebAssembly text in `guests/`: what the
//! demo, the benchmarks and the tests run (and examples for users).

/// Compiles WebAssembly text to a binary module.
pub fn compile(text: &str) -> Result<Vec<u8>, wat::Error> {
    wat::parse_str(text)
}

/// The Mandelbrot set as a PGM image, in bands of rows, one per task.
pub const MANDELBROT: &str = include_str!("../guests/mandelbrot.wat");
/// Writes "ok\n": the trivial task.
pub const HELLO: &str = include_str!("../guests/hello.wat");
/// Copies stdin to stdout in upper case; the byte count on stderr.
pub const UPPER: &str = include_str!("../guests/upper.wat");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_compiles() {
        for text in [MANDELBROT, HELLO, UPPER] {
            let module = compile(text).unwrap();
            assert_eq!(&module[..4], b"\0asm");
        }
    }
}
