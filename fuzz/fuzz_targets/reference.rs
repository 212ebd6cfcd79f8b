//! Image references and digests: any input parses or is refused, never panics,
//! and whatever parses prints back to something that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(reference) = ferry::types::Reference::parse(&text) {
        let again = ferry::types::Reference::parse(&reference.to_string()).expect("a printed reference parses");
        assert_eq!(again, reference);
    }
    if let Ok(digest) = text.parse::<ferry::types::Digest>() {
        assert_eq!(digest.to_string(), text);
    }
    let _ = text.parse::<ferry::types::Platform>();
});
