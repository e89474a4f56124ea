//! `CONTRACT.md` against the code, the OpenAPI document and the rest of the repository.
//!
//! - Every error code the code can return (a code given to `Error::new`, `Error::invalid`, `Error::not_found`,
//!   `Error::conflict` or `Error::too_large`, written as `"code": …`, or compared with `.code == …`, in
//!   `shared/`, `functions/` and `infra/src/`) and every code `infra/openapi.json` names in its error
//!   descriptions is a row of one of the contract's tables of error codes; every row there is a code the
//!   code can return.
//! - Every `CONTRACT.md §N` cited anywhere is a section of the contract, every link into it names one of its
//!   headings, and nothing cites a contract document that is not in the repository.
//!
//! Plain file reading, no server: cheap enough to run with everything else.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The header of every table of error codes in the contract.
const CODE_TABLE: &str = "| code | status | meaning |";

/// Where the code that answers requests lives (the load tools of `bench/` are not the API: their internal
/// codes are never an answer).
const SOURCES: [&str; 3] = ["shared", "functions", "infra/src"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn contract() -> String {
    read(&root().join("CONTRACT.md"))
}

fn is_code(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The rows of the contract's tables of error codes: code → status.
fn documented_codes(contract: &str) -> BTreeMap<String, String> {
    let mut codes = BTreeMap::new();
    let mut in_table = false;
    for line in contract.lines() {
        let line = line.trim();
        if line == CODE_TABLE {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let code = cells[1]
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .filter(|c| is_code(c))
            .unwrap_or_else(|| panic!("CONTRACT.md: not a code in a table of codes: {line}"));
        let status = cells.get(2).copied().unwrap_or("");
        assert!(
            codes.insert(code.to_owned(), status.to_owned()).is_none(),
            "CONTRACT.md lists `{code}` twice"
        );
    }
    codes
}

/// Every `.rs` file under `dir`, build output aside.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The error codes one source file can produce, read from the file without its whitespace: the literal or
/// `const` after each marker (for `Error::new`/`Self::new`, after the kind). A constant that is not declared
/// in the same file fails the test, so that no code slips past unread.
fn codes_in_source(path: &Path, found: &mut BTreeMap<String, BTreeSet<String>>) {
    let text: String = read(path).split_whitespace().collect();
    let name = path.strip_prefix(root()).unwrap().display().to_string();
    let markers = [
        ("Error::invalid(", false),
        ("Error::not_found(", false),
        ("Error::conflict(", false),
        ("Error::too_large(", false),
        ("Error::new(", true),
        ("Self::new(", true),
        ("\"code\":", false),
        (".code==", false),
        ("code.0==", false),
    ];
    for (marker, after_kind) in markers {
        for (at, _) in text.match_indices(marker) {
            let mut rest = &text[at + marker.len()..];
            if after_kind {
                // `Error::new(Kind::X, "code", …)`: the code is the second argument. A call whose first
                // argument closes before a comma has no code.
                match (rest.find(','), rest.find(')')) {
                    (Some(comma), Some(close)) if comma < close => rest = &rest[comma + 1..],
                    _ => continue,
                }
            }
            if let Some(literal) = rest.strip_prefix('"') {
                let literal = &literal[..literal.find('"').unwrap_or(0)];
                if is_code(literal) {
                    found
                        .entry(literal.to_owned())
                        .or_default()
                        .insert(name.clone());
                }
                continue;
            }
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let after = &rest[ident.len()..];
            if ident.is_empty()
                || !ident.starts_with(|c: char| c.is_ascii_uppercase())
                || after.starts_with("::")
                || after.starts_with(|c: char| c.is_ascii_alphanumeric())
            {
                continue;
            }
            let declaration = format!("const{ident}:&str=\"");
            let at = text.find(&declaration).unwrap_or_else(|| {
                panic!("{name}: the code `{ident}` is not a constant of this file")
            });
            let value = &text[at + declaration.len()..];
            let value = &value[..value.find('"').unwrap()];
            found
                .entry(value.to_owned())
                .or_default()
                .insert(name.clone());
        }
    }
}

/// Every error code the code can produce, with the files that produce it.
fn codes_in_code() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    for dir in SOURCES {
        rust_files(&root().join(dir), &mut files);
    }
    let mut found = BTreeMap::new();
    for file in &files {
        codes_in_source(file, &mut found);
    }
    found
}

/// The codes `infra/openapi.json` names: words in backquotes in the descriptions of error answers (every
/// shared response, the error schema, and each operation's responses from 400 up), less the names of
/// properties and parameters.
fn codes_in_openapi() -> BTreeSet<String> {
    let doc: Value = serde_json::from_str(strata::openapi::DOCUMENT).expect("infra/openapi.json");
    fn names(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(properties)) = map.get("properties") {
                    out.extend(properties.keys().cloned());
                }
                if let (Some(Value::String(name)), true) = (map.get("name"), map.contains_key("in"))
                {
                    out.insert(name.clone());
                }
                map.values().for_each(|v| names(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| names(v, out)),
            _ => {}
        }
    }
    fn descriptions<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(text)) = map.get("description") {
                    out.push(text);
                }
                map.values().for_each(|v| descriptions(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| descriptions(v, out)),
            _ => {}
        }
    }
    let mut not_codes = BTreeSet::new();
    names(&doc, &mut not_codes);
    let mut texts = Vec::new();
    descriptions(&doc["components"]["responses"], &mut texts);
    descriptions(&doc["components"]["schemas"]["Error"], &mut texts);
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().unwrap().values() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for (status, response) in responses {
                if status.parse::<u16>().is_ok_and(|s| s >= 400) {
                    descriptions(response, &mut texts);
                }
            }
        }
    }
    texts
        .iter()
        .flat_map(|text| text.split('`').skip(1).step_by(2))
        .filter(|word| is_code(word) && !not_codes.contains(*word))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_error_code_is_in_the_contract_and_every_listed_code_exists() {
    let documented = documented_codes(&contract());
    let produced = codes_in_code();
    let missing: Vec<String> = produced
        .iter()
        .filter(|(code, _)| !documented.contains_key(*code))
        .map(|(code, files)| {
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            format!("{code} ({})", files.join(", "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "error codes the code can return but CONTRACT.md does not list (add a row to a `{CODE_TABLE}` \
         table): {missing:?}"
    );
    let named = codes_in_openapi();
    let missing: Vec<&String> = named
        .iter()
        .filter(|c| !documented.contains_key(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "error codes infra/openapi.json names but CONTRACT.md does not list: {missing:?}"
    );
    let stale: Vec<&String> = documented
        .keys()
        .filter(|c| !produced.contains_key(*c))
        .collect();
    assert!(
        stale.is_empty(),
        "codes CONTRACT.md lists that no code returns: {stale:?}"
    );
    // The scan itself: it must see the codes of every layer (domain, HTTP, DynamoDB, local server).
    for code in [
        "conflict",
        "invalid_json",
        "store_throttled",
        "unauthorized",
        "request_timeout",
    ] {
        assert!(produced.contains_key(code), "the scan missed `{code}`");
    }
    for (code, status) in &documented {
        assert!(
            status == "—" || (status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit())),
            "CONTRACT.md: `{code}` has no status: {status:?}"
        );
    }
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_lowercase().next().unwrap_or(c)),
            _ => None,
        })
        .collect()
}

/// Directories that are not the repository's own text: build output, installed packages, fuzzing data and
/// the local server's data directory (all in `.gitignore`), and hidden ones (`.git`, virtual environments)
/// but for the CI's.
const NOT_SOURCE: [&str; 6] = [
    "target",
    "node_modules",
    "corpus",
    "artifacts",
    "coverage",
    "data",
];

/// The repository's text files.
fn text_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let hidden = name.starts_with('.') && name != ".github" && name != ".ci";
            if !(hidden || NOT_SOURCE.contains(&name.as_str())) {
                text_files(&path, found);
            }
        } else if std::fs::read(&path).is_ok_and(|bytes| std::str::from_utf8(&bytes).is_ok()) {
            found.push(path);
        }
    }
}

#[test]
fn every_citation_of_the_contract_is_to_a_section_that_exists() {
    let contract = contract();
    let mut sections = BTreeSet::new();
    let mut anchors = BTreeSet::new();
    for line in contract.lines() {
        if !line.starts_with('#') {
            continue;
        }
        let Some(heading) = line.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        if let Some(number) = heading.strip_prefix('§') {
            sections.insert(number.split(' ').next().unwrap().to_owned());
        }
        anchors.insert(anchor(heading));
    }
    assert_eq!(
        sections,
        BTreeSet::from(["1", "2", "3", "4"].map(String::from)),
        "the contract's numbered sections, which the code cites"
    );
    // Spelled in pieces, so that this file does not cite them itself.
    let retired = [["API", ".md"].concat(), ["API", " §"].concat()];
    let mut files = Vec::new();
    text_files(&root(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let text = read(file);
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        let in_contract = name == "CONTRACT.md";
        for old in &retired {
            if text.contains(old.as_str()) {
                wrong.push(format!(
                    "{name}: cites {old:?}, which is not in the repository"
                ));
            }
        }
        for (at, _) in text.match_indices("CONTRACT.md §") {
            let number: String = text[at + "CONTRACT.md §".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            // `§N` and the like in prose are not citations.
            if !number.is_empty() && !sections.contains(&number) {
                wrong.push(format!(
                    "{name}: cites CONTRACT.md §{number}, which does not exist"
                ));
            }
        }
        let links = text
            .match_indices("CONTRACT.md#")
            .map(|(at, _)| at + "CONTRACT.md#".len())
            .chain(
                in_contract
                    .then(|| text.match_indices("](#").map(|(at, _)| at + "](#".len()))
                    .into_iter()
                    .flatten(),
            );
        for at in links {
            let target: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if !target.is_empty() && !anchors.contains(&target) {
                wrong.push(format!(
                    "{name}: links to CONTRACT.md#{target}, which is no heading"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
