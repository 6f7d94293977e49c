//! `README.zh-CN.md` keeps in step with `README.md`: the same headings (their
//! levels, in order), the same fenced code blocks in each section, every
//! configuration key of `config.toml` and every error code of the contract in
//! both, relative links that lead somewhere, and the link from each to the other.
//! Files only: no server, no Redis.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use wxsession::Config;

const EN: &str = "README.md";
const ZH: &str = "README.zh-CN.md";

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo_file(name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
}

struct Heading {
    level: usize,
    text: String,
    /// 1-based.
    line: usize,
}

/// A Markdown file's headings and, for each section, the info strings (`sh`,
/// `toml`, or empty) of its fenced code blocks. Section 0 is what comes before
/// the first heading; section `i` runs from heading `i - 1` to the next heading
/// of any level. Lines inside fenced code blocks are never headings (the READMEs'
/// shell and TOML blocks are full of `# comment` lines).
struct Outline {
    headings: Vec<Heading>,
    blocks: Vec<Vec<String>>,
}

/// The opening fence of a line (its character, its length, the info string), if
/// it is one: up to three spaces, then three or more backticks or tildes.
fn fence(line: &str) -> Option<(char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.len() - rest.trim_start_matches(ch).len();
    (len >= 3).then(|| (ch, len, rest[len..].trim()))
}

/// An ATX heading's level and text: up to three spaces, one to six `#`, then a
/// blank or the end of the line.
fn heading(line: &str) -> Option<(usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.len() - rest.trim_start_matches('#').len();
    let text = &rest[level..];
    ((1..=6).contains(&level) && (text.is_empty() || text.starts_with([' ', '\t'])))
        .then(|| (level, text.trim()))
}

fn outline(name: &str, text: &str) -> Outline {
    let mut outline = Outline {
        headings: Vec::new(),
        blocks: vec![Vec::new()],
    };
    let mut open: Option<(char, usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some((ch, len, _)) = open {
            if fence(line).is_some_and(|(c, l, info)| c == ch && l >= len && info.is_empty()) {
                open = None;
            }
        } else if let Some((ch, len, info)) = fence(line) {
            open = Some((ch, len, i + 1));
            outline.blocks.last_mut().unwrap().push(info.to_string());
        } else if let Some((level, text)) = heading(line) {
            outline.headings.push(Heading {
                level,
                text: text.to_string(),
                line: i + 1,
            });
            outline.blocks.push(Vec::new());
        }
    }
    if let Some((_, _, line)) = open {
        panic!("{name}: the code block opened on line {line} is never closed");
    }
    outline
}

fn show(h: &Heading) -> String {
    format!("line {} `{} {}`", h.line, "#".repeat(h.level), h.text)
}

/// What comes just before heading `i` of a file, to say where a missing one goes.
fn after(headings: &[Heading], i: usize) -> String {
    match i.checked_sub(1) {
        Some(prev) => format!("after {}", show(&headings[prev])),
        None => "before the first heading".to_string(),
    }
}

/// The ASCII words of a heading's text, lower-cased: what a translation keeps
/// (`HTTP`, `nginx`, `redis-cli`, `access_token`).
fn ascii_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// How alike heading `i` of `en` and heading `j` of `zh` are, past their level:
/// the ASCII words they share, and whether their sections hold the same code
/// blocks. Only breaks ties between equally long alignments.
fn likeness(en: &Outline, i: usize, zh: &Outline, j: usize) -> u64 {
    let shared = ascii_words(&en.headings[i].text)
        .intersection(&ascii_words(&zh.headings[j].text))
        .count() as u64;
    let same_blocks = u64::from(en.blocks[i + 1] == zh.blocks[j + 1]);
    shared + same_blocks
}

/// The headings of either file that the other lacks: the two files' headings
/// are aligned so that as many as possible pair up with one of the same level
/// (and, among such alignments, the most alike pairs); what is left unpaired is
/// reported, with where it sits. Also the alignment itself, one row per pair.
fn heading_differences(en: &Outline, zh: &Outline) -> (Vec<String>, Vec<String>) {
    const PAIR: u64 = 1 << 32;
    let (n, m) = (en.headings.len(), zh.headings.len());
    let pair = |i: usize, j: usize| {
        (en.headings[i].level == zh.headings[j].level).then(|| PAIR + likeness(en, i, zh, j))
    };
    // best[i][j]: the best alignment of en's headings i.. with zh's headings j...
    let mut best = vec![vec![0u64; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let paired = pair(i, j).map_or(0, |w| w + best[i + 1][j + 1]);
            best[i][j] = paired.max(best[i + 1][j]).max(best[i][j + 1]);
        }
    }
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    let row = |h: Option<&Heading>| {
        h.map_or("(none)".to_string(), |h| {
            format!("{} {}", "#".repeat(h.level), h.text)
        })
    };
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && pair(i, j).is_some_and(|w| best[i][j] == w + best[i + 1][j + 1]) {
            rows.push(format!(
                "{} | {}",
                row(Some(&en.headings[i])),
                row(Some(&zh.headings[j]))
            ));
            i += 1;
            j += 1;
        } else if i < n && (j == m || best[i][j] == best[i + 1][j]) {
            problems.push(format!(
                "{ZH} lacks a level-{} heading for {EN} {} (it would go {} of {ZH})",
                en.headings[i].level,
                show(&en.headings[i]),
                after(&zh.headings, j),
            ));
            rows.push(format!("{} | {}", row(Some(&en.headings[i])), row(None)));
            i += 1;
        } else {
            problems.push(format!(
                "{ZH} {} has no counterpart in {EN} (it comes {} of {EN})",
                show(&zh.headings[j]),
                after(&en.headings, i),
            ));
            rows.push(format!("{} | {}", row(None), row(Some(&zh.headings[j]))));
            j += 1;
        }
    }
    (problems, rows)
}

fn section_name(headings: &[Heading], section: usize) -> String {
    match section.checked_sub(1) {
        Some(h) => show(&headings[h]),
        None => "before the first heading".to_string(),
    }
}

fn describe_blocks(blocks: &[String]) -> String {
    let infos: Vec<&str> = blocks
        .iter()
        .map(|info| {
            if info.is_empty() {
                "(no language)"
            } else {
                info
            }
        })
        .collect();
    format!("{} [{}]", blocks.len(), infos.join(", "))
}

#[test]
fn both_readmes_have_the_same_sections_and_code_blocks() {
    let en = outline(EN, &read(EN));
    let zh = outline(ZH, &read(ZH));
    assert!(
        en.headings.len() > 10,
        "{EN}: only {} headings found; is the parser broken?",
        en.headings.len()
    );

    let (problems, rows) = heading_differences(&en, &zh);
    assert!(
        problems.is_empty(),
        "{ZH} must have the headings of {EN}, level for level and in the same order:\n  {}\n\
         the headings as aligned ({EN} | {ZH}):\n    {}",
        problems.join("\n  "),
        rows.join("\n    ")
    );

    let mut problems = Vec::new();
    for (section, (en_blocks, zh_blocks)) in en.blocks.iter().zip(&zh.blocks).enumerate() {
        if en_blocks != zh_blocks {
            problems.push(format!(
                "section {EN} {} / {ZH} {}: {EN} has {} code blocks, {ZH} has {}",
                section_name(&en.headings, section),
                section_name(&zh.headings, section),
                describe_blocks(en_blocks),
                describe_blocks(zh_blocks),
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "each section must hold the same fenced code blocks (count and language) in both files:\n  {}",
        problems.join("\n  ")
    );
}

/// Every key `config.toml` documents, as `section.key`: those it sets and those
/// it shows commented out (`# appid = "wx0123456789abcdef"`, for the keys with no
/// default), i.e. every `#` line inside a section that is one TOML `key = value`.
/// Each is checked to be a key the server knows, so that a comment line which
/// merely looks like one is not mistaken for a key.
fn config_keys() -> Vec<String> {
    let env = [
        ("WXSESSION_WECHAT_APPID", "wx1"),
        ("WXSESSION_WECHAT_SECRET", "s"),
    ]
    .map(|(name, value)| (name.to_string(), value.to_string()));
    let mut keys = Vec::new();
    let mut unknown = Vec::new();
    let mut section: Option<&str> = None;
    for line in read("config.toml").lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim());
            continue;
        }
        let Some(section) = section else { continue };
        let candidate = line.strip_prefix('#').map_or(line, str::trim);
        let Ok(table) = candidate.parse::<toml::Table>() else {
            continue;
        };
        for key in table.keys() {
            let key = format!("{section}.{key}");
            let alone = format!("[{section}]\n{candidate}\n");
            if Config::from_sources(&alone, env.clone()).is_err_and(|e| e.message == "unknown key")
            {
                unknown.push(key.clone());
            }
            keys.push(key);
        }
    }
    assert!(
        unknown.is_empty(),
        "config.toml shows these as keys, but the server does not know them: {unknown:?}"
    );
    keys
}

/// The contract's error codes: the `Error` schema's enum in the OpenAPI document
/// (which the HTTP layer's own tests hold equal to its table of codes).
fn error_codes() -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(&read("src/http/openapi.json")).unwrap();
    doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .expect("openapi.json: components.schemas.Error.properties.error.enum")
        .iter()
        .map(|code| code.as_str().unwrap().to_string())
        .collect()
}

/// Each name that does not appear in backticks (`` `name` ``) in each README.
fn missing_in_backticks(names: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for file in [EN, ZH] {
        let text = read(file);
        let missing: Vec<String> = names
            .iter()
            .filter(|name| !text.contains(&format!("`{name}`")))
            .map(|name| format!("`{name}`"))
            .collect();
        if !missing.is_empty() {
            problems.push(format!("{file} lacks {}", missing.join(", ")));
        }
    }
    problems
}

#[test]
fn every_config_key_is_in_both_readmes() {
    let keys = config_keys();
    let found: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    for expected in [
        "server.bind",
        "wechat.appid",
        "admin.token",
        "redis.sentinel_master",
    ] {
        assert!(
            found.contains(expected),
            "{expected} not read from config.toml (set or commented out): {keys:?}"
        );
    }
    let problems = missing_in_backticks(&keys);
    assert!(
        problems.is_empty(),
        "every key of config.toml must appear as `section.key` in both READMEs:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_error_code_is_in_both_readmes() {
    let codes = error_codes();
    assert!(codes.iter().any(|c| c == "invalid_session"), "{codes:?}");
    let problems = missing_in_backticks(&codes);
    assert!(
        problems.is_empty(),
        "every error code of openapi.json's Error enum must appear as `code` in both READMEs:\n  {}",
        problems.join("\n  ")
    );
}

/// The targets of the inline links `[text](target)` outside code blocks that
/// point into the repository (no scheme, no bare `#anchor`), without fragments.
fn relative_links(name: &str, text: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    let mut open: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some((ch, len)) = open {
            if fence(line).is_some_and(|(c, l, info)| c == ch && l >= len && info.is_empty()) {
                open = None;
            }
            continue;
        }
        if let Some((ch, len, _)) = fence(line) {
            open = Some((ch, len));
            continue;
        }
        for part in line.split("](").skip(1) {
            let target = part
                .split(')')
                .next()
                .and_then(|t| t.split_whitespace().next())
                .unwrap_or("");
            let path = target.split('#').next().unwrap();
            if !path.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
                links.push((i + 1, path.to_string()));
            }
        }
    }
    assert!(open.is_none(), "{name}: a code block is never closed");
    links
}

#[test]
fn relative_links_resolve_and_each_readme_links_the_other() {
    let mut problems = Vec::new();
    for (file, other) in [(EN, ZH), (ZH, EN)] {
        let text = read(file);
        let links = relative_links(file, &text);
        for (line, path) in &links {
            if !repo_file(path).exists() {
                problems.push(format!(
                    "{file} line {line}: link to `{path}`, which does not exist"
                ));
            }
        }
        let targets: BTreeSet<&str> = links.iter().map(|(_, p)| p.as_str()).collect();
        if !targets.contains(other) {
            problems.push(format!("{file} has no link to {other}"));
        }
    }
    let en_links: BTreeSet<String> = relative_links(EN, &read(EN))
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p != ZH)
        .collect();
    let zh_links: BTreeSet<String> = relative_links(ZH, &read(ZH))
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p != EN)
        .collect();
    for missing in en_links.difference(&zh_links) {
        problems.push(format!("{ZH} does not link `{missing}`, which {EN} links"));
    }
    for extra in zh_links.difference(&en_links) {
        problems.push(format!("{ZH} links `{extra}`, which {EN} does not"));
    }
    assert!(problems.is_empty(), "links:\n  {}", problems.join("\n  "));
}
