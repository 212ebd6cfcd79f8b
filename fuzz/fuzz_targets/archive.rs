//! The archive reader on arbitrary bytes, in dry-run mode against a scratch
//! store: errors are fine, panics and files outside the store are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn store() -> &'static ferry::store::Store {
    static STORE: OnceLock<ferry::store::Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-{}", std::process::id()));
        ferry::store::Store::open(dir).expect("scratch store")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = ferry::archive::load::load(store(), &mut &data[..], "fuzz", true);
});
