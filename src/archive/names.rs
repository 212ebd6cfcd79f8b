//! Entry names inside archives: cleaned once, with one policy for every
//! reader. Absolute names, `..`, NUL, backslashes and overlong names are
//! refused (ggcr#2329/#2330); symlinks resolve lexically inside the archive.

/// Longest entry name accepted.
pub const MAX_NAME: usize = 4096;

/// Clean an entry name: strip `./`, collapse `//`, drop a trailing `/`.
/// Returns why the name is unsafe when it is.
pub fn clean(raw: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "a name that is not UTF-8".to_owned())?;
    if text.len() > MAX_NAME {
        return Err(format!("a name longer than {MAX_NAME} bytes"));
    }
    if text.contains('\0') || text.contains('\\') {
        return Err(format!("the name {text:?} (NUL or backslash)"));
    }
    if text.starts_with('/') || (text.len() > 1 && text.as_bytes()[1] == b':') {
        return Err(format!("the absolute name {text:?}"));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("the name {text:?} (it climbs out with ..)")),
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// Resolve a link found at `name` pointing at `target`, inside the archive.
pub fn resolve_link(name: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// A link entry's target as text (lossy: names are checked afterwards).
pub fn link_target<R: std::io::Read>(entry: &tar::Entry<'_, R>) -> String {
    let target = entry
        .link_name_bytes()
        .map(|t| t.into_owned())
        .unwrap_or_default();
    String::from_utf8_lossy(&target).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_refuses_names() {
        assert_eq!(clean(b"./manifest.json").unwrap(), "manifest.json");
        assert_eq!(clean(b"blobs//sha256/ab/").unwrap(), "blobs/sha256/ab");
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"blobs/sha256/../../x",
            b"a\\b",
            b"C:x",
            b"a\0b",
        ] {
            assert!(clean(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            resolve_link("abc/layer.tar", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(resolve_link("manifest.json", "../../etc/shadow"), None);
        assert_eq!(resolve_link("manifest.json", "/etc/shadow"), None);
    }
}
