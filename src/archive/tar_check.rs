//! A streaming check that `ferry import`'s input is a tar archive: every
//! header's checksum, each entry's data (pax `size` records honoured), the
//! end on a block boundary.

use std::io::Read;

/// Checks, while the bytes pass, that they are a tar archive: every header
/// block's checksum, each entry's data present, the end on a block
/// boundary (as `docker import` refuses what is not a tar).
pub(super) struct TarCheck<R> {
    inner: R,
    header: [u8; 512],
    filled: usize,
    /// Data (and padding) bytes of the current entry still to pass.
    skip: u64,
    /// Two zero blocks end the archive: nothing after them is read.
    zero_blocks: u8,
    total: u64,
    /// The data of a pax extended header being passed (its records may
    /// give the next entry's real `size`, as for files over 8 GiB).
    pax: Option<Vec<u8>>,
    /// A `size` the last pax header gave, for the next entry.
    pax_size: Option<u64>,
    /// Data bytes (not padding) of the current entry still to pass.
    pax_remaining: u64,
    /// GNU sparse extension blocks follow (no checksum of their own);
    /// the entry's data (this many bytes, padded) comes after the last.
    sparse_data: Option<u64>,
    /// The type of the extension header whose data is being collected
    /// (`x` pax records, `L` a GNU long name).
    pax_kind: u8,
    /// A name a pax `path` record or a GNU long-name entry gave the next entry.
    next_name: Option<Vec<u8>>,
}

/// Why the input is refused: not a tar at all, or a tar with an entry
/// whose name would land outside the root.
enum Problem {
    Format(String),
    Name(String),
}

impl From<String> for Problem {
    fn from(why: String) -> Problem {
        Problem::Format(why)
    }
}

/// An entry's name as its ustar header gives it (prefix, then name).
fn ustar_name(header: &[u8; 512]) -> Vec<u8> {
    let field = |range: std::ops::Range<usize>| {
        let bytes = &header[range];
        bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())].to_vec()
    };
    let name = field(0..100);
    let prefix = field(345..500);
    match &header[257..262] == b"ustar" && !prefix.is_empty() {
        true => [prefix, b"/".to_vec(), name].concat(),
        false => name,
    }
}

/// A numeric header field as tar readers take it: octal digits between
/// spaces and NULs (an empty field is 0), or GNU base-256 when the first
/// byte's high bit is set. `None` when it is neither.
fn numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut value: u64 = u64::from(field[0] & 0x3f);
        for &byte in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(byte))?;
        }
        return Some(value);
    }
    let text = field.split(|&b| b == 0).next().unwrap_or_default();
    let text = std::str::from_utf8(text).ok()?.trim_matches(' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

impl<R> TarCheck<R> {
    pub(super) fn new(inner: R) -> TarCheck<R> {
        TarCheck {
            inner,
            header: [0; 512],
            filled: 0,
            skip: 0,
            zero_blocks: 0,
            total: 0,
            pax: None,
            pax_size: None,
            pax_remaining: 0,
            sparse_data: None,
            pax_kind: 0,
            next_name: None,
        }
    }

    fn check_header(&mut self) -> Result<(), Problem> {
        if self.header.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            return Ok(());
        }
        self.zero_blocks = 0;
        self.pax = None;
        let stored = numeric(&self.header[148..156])
            .ok_or_else(|| "a header's checksum field is not a number".to_owned())?;
        // The sum of the header's bytes with the checksum field as spaces,
        // unsigned as POSIX says or signed as some old writers made it.
        let (unsigned, signed) =
            self.header
                .iter()
                .enumerate()
                .fold((0u64, 0i64), |(unsigned, signed), (i, &b)| {
                    let b = if (148..156).contains(&i) { b' ' } else { b };
                    (unsigned + u64::from(b), signed + i64::from(b as i8))
                });
        if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
            return Err(Problem::Format(format!(
                "the header at byte {} has a wrong checksum",
                self.total - 512
            )));
        }
        let size = numeric(&self.header[124..136])
            .ok_or_else(|| "a header's size field is not a number".to_owned())?;
        let kind = self.header[156];
        let size = match kind {
            // A pax header's (or a GNU long name's) own data: it applies to
            // the next entry.
            b'x' | b'L' => {
                self.pax = (size <= 1 << 20).then(|| Vec::with_capacity(size as usize));
                self.pax_kind = kind;
                size
            }
            b'g' | b'K' => size,
            _ => {
                // One name rule with every other door (export, load): no
                // absolute names, nothing that climbs out with `..`.
                let name = self
                    .next_name
                    .take()
                    .unwrap_or_else(|| ustar_name(&self.header));
                super::names::clean(&name).map_err(Problem::Name)?;
                self.pax_size.take().unwrap_or(size)
            }
        };
        let padded = size
            .div_ceil(512)
            .checked_mul(512)
            .ok_or_else(|| "a header's size is impossibly large".to_owned())?;
        // An old GNU sparse file with more than four regions: extension
        // blocks (flagged at byte 482, then 504 of each) come first.
        if self.header[156] == b'S' && self.header[482] != 0 {
            self.sparse_data = Some(padded);
        } else {
            self.skip = padded;
        }
        self.pax_remaining = size;
        Ok(())
    }

    /// A GNU sparse extension block: 21 (offset, size) numeric pairs, and
    /// another block follows while byte 504 is set.
    fn sparse_extension(&mut self) -> Result<(), String> {
        let numbers = self.header[..504].chunks(12).all(|f| numeric(f).is_some());
        if !numbers {
            return Err(format!(
                "the sparse map at byte {} is not numbers",
                self.total - 512
            ));
        }
        if self.header[504] == 0 {
            self.skip = self.sparse_data.take().unwrap_or(0);
        }
        Ok(())
    }

    /// Collect a pax header's data as it passes; at its end, keep the
    /// `size` record it holds.
    fn pass_data(&mut self, bytes: &[u8]) {
        let data = self.pax_remaining.min(bytes.len() as u64) as usize;
        self.pax_remaining -= data as u64;
        if let Some(pax) = &mut self.pax {
            pax.extend_from_slice(&bytes[..data]);
            if self.pax_remaining == 0 {
                let data = std::mem::take(pax);
                self.pax = None;
                if self.pax_kind == b'L' {
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    self.next_name = Some(data[..end].to_vec());
                    return;
                }
                let text = String::from_utf8_lossy(&data).into_owned();
                // Records are "LEN key=value\n".
                let record = |key: &str| {
                    text.lines().find_map(|record| {
                        let (_, pair) = record.split_once(' ')?;
                        pair.strip_prefix(key).map(str::to_owned)
                    })
                };
                self.pax_size = record("size=").and_then(|s| s.parse().ok());
                if let Some(path) = record("path=") {
                    self.next_name = Some(path.into_bytes());
                }
            }
        }
    }
}

impl<R: Read> Read for TarCheck<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let invalid = |why: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a tar archive: {why}"),
            )
        };
        let read = self.inner.read(buffer)?;
        if read == 0 {
            if self.total == 0 {
                return Err(invalid("it is empty".into()));
            }
            if self.total < 512 {
                return Err(invalid(format!(
                    "it is {} bytes, shorter than one tar header",
                    self.total
                )));
            }
            if self.zero_blocks < 2
                && (self.filled != 0 || self.skip != 0 || self.sparse_data.is_some())
            {
                return Err(invalid(format!(
                    "it ends in the middle of an entry (after {} bytes)",
                    self.total
                )));
            }
            return Ok(0);
        }
        let mut rest = &buffer[..read];
        while !rest.is_empty() && self.zero_blocks < 2 {
            if self.skip > 0 {
                let n = rest
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.pass_data(&rest[..n]);
                self.skip -= n as u64;
                self.total += n as u64;
                rest = &rest[n..];
                continue;
            }
            let n = rest.len().min(512 - self.filled);
            self.header[self.filled..self.filled + n].copy_from_slice(&rest[..n]);
            self.filled += n;
            self.total += n as u64;
            rest = &rest[n..];
            if self.filled == 512 {
                self.filled = 0;
                if self.sparse_data.is_some() {
                    self.sparse_extension().map_err(invalid)?;
                } else {
                    self.check_header().map_err(|problem| match problem {
                        Problem::Format(why) => invalid(why),
                        Problem::Name(why) => std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the tar has an entry with {why}: a layer must stay inside its \
                                 root (make the names relative, e.g. `tar -C DIR -cf x.tar .`)"
                            ),
                        ),
                    })?;
                }
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::TarCheck;
    use std::io::Read as _;

    fn header(name: &str, kind: u8, size: u64) -> Vec<u8> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        bytes
    }

    fn check(bytes: &[u8]) -> std::io::Result<()> {
        let mut reader = TarCheck::new(bytes);
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).map(|_| ())
    }

    #[test]
    fn a_pax_size_record_sets_the_next_entrys_size() {
        // As writers store files over 8 GiB: the ustar size field is 0 and
        // the real size is in the pax header before it.
        let record = b"12 size=600\n".to_vec();
        let mut tar = header("PaxHeaders/big", b'x', record.len() as u64);
        tar.extend(padded(record));
        tar.extend(header("big", b'0', 0));
        tar.extend(padded(vec![b'a'; 600]));
        tar.extend([0u8; 1024]);
        check(&tar).unwrap();
        // Without the pax header the same bytes are not a tar.
        let mut plain = header("big", b'0', 0);
        plain.extend(padded(vec![b'a'; 600]));
        plain.extend([0u8; 1024]);
        assert!(check(&plain).is_err());
    }

    #[test]
    fn gnu_record_padding_after_the_end_is_accepted() {
        let mut tar = header("a", b'0', 5);
        tar.extend(padded(b"hello".to_vec()));
        tar.resize(10240, 0);
        check(&tar).unwrap();
        tar.truncate(700);
        assert!(check(&tar).is_err());
    }

    #[test]
    fn numeric_fields_as_tar_readers_take_them() {
        assert_eq!(super::numeric(b"0000644\0"), Some(0o644));
        assert_eq!(super::numeric(b"  644 \0\0"), Some(0o644));
        assert_eq!(super::numeric(&[0; 12]), Some(0), "an all-NUL field is 0");
        assert_eq!(super::numeric(b"   \0"), Some(0));
        let mut base256 = [0u8; 12];
        base256[0] = 0x80;
        base256[10] = 0x01;
        assert_eq!(super::numeric(&base256), Some(256));
        assert_eq!(super::numeric(b"12x\0"), None);
        assert_eq!(super::numeric(&[0xff; 12]), None, "negative");
    }

    #[test]
    fn a_signed_checksum_and_an_all_nul_size_are_accepted() {
        // An old writer: the checksum summed as signed bytes, over a name
        // with bytes above 0x7f, and a size field left as NULs.
        let mut block = header("caf\u{e9}", b'5', 0);
        block[124..136].fill(0);
        let signed: i64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(b as i8)
                }
            })
            .sum();
        block[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        let mut tar = block.clone();
        tar.extend([0u8; 1024]);
        check(&tar).unwrap();
        block[148..156].copy_from_slice(format!("{:06o}\0 ", signed + 1).as_bytes());
        let mut wrong = block;
        wrong.extend([0u8; 1024]);
        assert!(check(&wrong).is_err());
    }

    #[test]
    fn gnu_sparse_extension_blocks_are_not_headers() {
        // A sparse file of 5 regions: the header holds 4, one extension
        // block the fifth; then 5 × 512 bytes of data.
        let mut sparse = header("holes", b'S', 5 * 512);
        sparse[482] = 1;
        let sum: u32 = sparse
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        sparse[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut extension = vec![0u8; 512];
        extension[..12].copy_from_slice(b"00000040000\0");
        let mut tar = sparse;
        tar.extend(extension);
        tar.extend(vec![b'd'; 5 * 512]);
        tar.extend(header("after", b'0', 0));
        tar.extend([0u8; 1024]);
        check(&tar).unwrap();
        // Cut short before its extension blocks end: not a tar.
        let cut = &tar[..512];
        assert!(check(cut).is_err());
        // An "extension" that is not a sparse map: not a tar.
        let mut garbage = tar.clone();
        garbage[512..524].copy_from_slice(b"not a number");
        assert!(check(&garbage).is_err());
    }

    /// A regular-file header whose name field holds `name` as it is.
    fn raw_named(name: &[u8]) -> Vec<u8> {
        let mut block = header("placeholder", b'0', 0);
        block[..100].fill(0);
        block[..name.len()].copy_from_slice(name);
        let sum: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        block
    }

    #[test]
    fn names_that_leave_the_root_are_refused_however_they_are_written() {
        let ended = |mut tar: Vec<u8>| {
            tar.extend([0u8; 1024]);
            tar
        };
        check(&ended(raw_named(b"etc/ok"))).unwrap();
        for bad in [&b"../etc/evil"[..], b"a/../../etc/evil"] {
            let error = check(&ended(raw_named(bad))).unwrap_err().to_string();
            assert!(error.contains("climbs out"), "{error}");
        }
        let error = check(&ended(raw_named(b"/etc/abs")))
            .unwrap_err()
            .to_string();
        assert!(error.contains("absolute name"), "{error}");
        // A GNU long name is the name that counts.
        let long = format!("{}/../../../etc/evil", "d".repeat(150)).into_bytes();
        let mut tar = header("././@LongLink", b'L', long.len() as u64 + 1);
        tar.extend(padded([long, vec![0]].concat()));
        tar.extend(raw_named(b"harmless"));
        assert!(check(&ended(tar))
            .unwrap_err()
            .to_string()
            .contains("climbs out"));
        // So is a pax `path` record.
        let record = b"26 path=../../etc/evil\n".to_vec();
        let mut tar = header("PaxHeaders/x", b'x', record.len() as u64);
        tar.extend(padded(record));
        tar.extend(raw_named(b"harmless"));
        assert!(check(&ended(tar))
            .unwrap_err()
            .to_string()
            .contains("climbs out"));
        // A long name that stays inside is fine.
        let inside = format!("{}/ok", "d".repeat(150)).into_bytes();
        let mut tar = header("././@LongLink", b'L', inside.len() as u64 + 1);
        tar.extend(padded([inside, vec![0]].concat()));
        tar.extend(raw_named(b"harmless"));
        check(&ended(tar)).unwrap();
    }
}
