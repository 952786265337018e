//! The zip: entry names taken from the URLs, made safe, and the archive
//! written from the downloaded files with progress.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

const MAX_NAME: usize = 100;

/// One name per URL, in order: the last segment of the URL's path, decoded,
/// reduced to `[A-Za-z0-9._-]`, never empty, never starting with a dot, never
/// a path; later duplicates get `-2`, `-3`… before the extension.
pub fn entry_names(urls: &[String]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    urls.iter()
        .enumerate()
        .map(|(index, url)| {
            let base = sanitise(&last_segment(url)).unwrap_or_else(|| format!("file-{}", index + 1));
            let (stem, extension) = match base.rfind('.') {
                Some(dot) if dot > 0 => (base[..dot].to_owned(), base[dot..].to_owned()),
                _ => (base.clone(), String::new()),
            };
            let mut name = base;
            let mut n = 2;
            while !taken.insert(name.to_ascii_lowercase()) {
                name = format!("{stem}-{n}{extension}");
                n += 1;
            }
            name
        })
        .collect()
}

fn last_segment(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else { return String::new() };
    let segment = parsed.path_segments().and_then(|mut segments| segments.next_back()).unwrap_or("");
    percent_decode(segment)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(value) = text.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Keeps what is safe in a file name on every system; `None` when nothing useful is left.
fn sanitise(name: &str) -> Option<String> {
    let mut clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    clean = clean.trim_start_matches(['.', '_']).trim_end_matches(['.', ' ']).to_owned();
    // Collapse runs of dots, so no `..` survives anywhere in the name.
    while clean.contains("..") {
        clean = clean.replace("..", ".");
    }
    clean.truncate(MAX_NAME);
    (!clean.is_empty() && clean.chars().any(|c| c.is_ascii_alphanumeric())).then_some(clean)
}

/// Writes `entries` (name in the zip, file on disk) into `out` with deflate,
/// calling `progress` with the percent of input bytes done as it goes.
/// Returns the zip's size.
pub fn write_zip(entries: &[(String, PathBuf)], out: &Path, mut progress: impl FnMut(u8)) -> std::io::Result<u64> {
    let total: u64 = entries.iter().map(|(_, path)| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)).sum::<u64>().max(1);
    let mut zip = zip::ZipWriter::new(BufWriter::new(File::create(out)?));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).large_file(total > u32::MAX as u64);
    let mut done = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    for (name, path) in entries {
        zip.start_file(name.as_str(), options).map_err(std::io::Error::other)?;
        let mut file = File::open(path)?;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            zip.write_all(&buffer[..read])?;
            done += read as u64;
            progress((done * 100 / total).min(99) as u8);
        }
    }
    let mut writer = zip.finish().map_err(std::io::Error::other)?;
    writer.flush()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    progress(100);
    Ok(file.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(urls: &[&str]) -> Vec<String> {
        entry_names(&urls.iter().map(|u| u.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn hostile_names_are_made_safe() {
        assert_eq!(
            names(&[
                "https://a.example/img/logo.png",
                "https://b.example/other/LOGO.png",
                "https://c.example/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                "https://d.example/..%5C..%5Cwindows%5Cwin.ini",
                "https://e.example/",
                "https://f.example/.htaccess",
                "https://g.example/r%C3%A9sum%C3%A9%20final.pdf",
                "https://h.example/logo.png?size=2",
            ]),
            ["logo.png", "LOGO-2.png", "etc_passwd", "windows_win.ini", "file-5", "htaccess", "r_sum__final.pdf", "logo-3.png"]
        );
    }

    #[test]
    fn long_names_are_cut() {
        let url = format!("https://x.example/{}.bin", "a".repeat(300));
        assert_eq!(names(&[&url])[0].len(), MAX_NAME);
    }

    #[test]
    fn zip_round_trip_with_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("0.part"), dir.path().join("1.part"));
        std::fs::write(&a, vec![7u8; 600_000]).unwrap();
        std::fs::write(&b, b"hello").unwrap();
        let out = dir.path().join("out.zip");
        let mut seen = Vec::new();
        write_zip(&[("a.bin".into(), a), ("b.txt".into(), b)], &out, |p| seen.push(p)).unwrap();
        assert_eq!(seen.last(), Some(&100));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.len() >= 3, "{seen:?}");
        let mut archive = zip::ZipArchive::new(File::open(&out).unwrap()).unwrap();
        assert_eq!(archive.len(), 2);
        let mut text = String::new();
        archive.by_name("b.txt").unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        assert_eq!(archive.by_name("a.bin").unwrap().size(), 600_000);
    }
}
