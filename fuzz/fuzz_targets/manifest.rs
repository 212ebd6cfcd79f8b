//! Manifest and index parsing from raw bytes with and without a claimed type.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for claimed in [None, Some("application/vnd.oci.image.index.v1+json"), Some("application/vnd.docker.distribution.manifest.v2+json")] {
        if let Ok(parsed) = ferry::types::ParsedManifest::parse(bytes::Bytes::copy_from_slice(data), claimed, "fuzz") {
            for child in parsed.children() {
                ferry::types::manifest::descriptor_digest(child).expect("children were validated");
            }
        }
    }
});
