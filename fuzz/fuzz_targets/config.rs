//! The config parser and validator on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = ferry::config::Config::parse(&text, std::path::Path::new("/nonexistent/fuzz.toml"));
});
