//! No import circles between the files of a crate: a file that uses another file of its crate
//! which uses it back (directly or through others) makes neither readable alone (issue 21).
//!
//! For every crate under `crates/`, each `.rs` file under `src/` is a node; a path in a file
//! that starts with `crate::`, `super::` or `self::` (in a `use` or in code), or a `use` of a
//! child module by its bare name, is an edge to the file that defines what it names. Names
//! re-exported by a module (`pub use error::DataError` in lib.rs) are followed to the file they
//! come from, so `crate::DataError` is an edge to `error.rs`. A file and its ancestors
//! (lib.rs, a mod.rs) are the module tree itself — a parent declares and re-exports its
//! children, a child uses its parent's items — so edges between them are not counted; only
//! circles among files where neither contains the other are. Test code (`#[cfg(test)]` items,
//! and files declared by `#[cfg(test)] mod …;`) is left out: it uses the crate as a consumer
//! does, like the tests in `tests/` (plan.rs's tests fill a `ResultsStore`, which reads plans).
//!
//! `cargo test -p bertlab-tests --test import_circles -- --nocapture` prints every circle,
//! known exceptions included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose circles are known and being removed; each entry says where. The test fails
/// when such a crate no longer has a circle, so that the exception is removed with it.
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

#[test]
fn no_crate_has_import_circles_between_its_files() {
    let crates = bertlab_tests::workspace_root().join("crates");
    let mut names: Vec<String> = std::fs::read_dir(&crates)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("src").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "crates/ has only {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let circles = import_circles(&crates.join(name).join("src"));
        let known = KNOWN_EXCEPTIONS.iter().find(|(c, _)| c == name);
        for circle in &circles {
            eprintln!(
                "crates/{name}: {circle}{}",
                known.map(|(_, why)| format!(" (known: {why})")).unwrap_or_default()
            );
        }
        match (circles.is_empty(), known) {
            (false, None) => failures.push(format!("crates/{name}:\n  {}", circles.join("\n  "))),
            (true, Some((_, why))) => failures.push(format!(
                "crates/{name} has no import circle any more: remove its entry from KNOWN_EXCEPTIONS ({why})"
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "import circles between files:\n{}", failures.join("\n"));
}

#[test]
fn the_checker_finds_direct_and_longer_circles_through_re_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    let write = |rel: &str, text: &str| {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod d;\npub mod report;\npub use c::Thing;\nfn root_item() {}\n",
    );
    // a → b → a, b written as a grouped use and a code path.
    write("a.rs", "use crate::{b::Beta, root_item};\npub struct Alpha;\n");
    write("b.rs", "pub struct Beta;\nfn f() { let _ = crate::a::Alpha; }\n");
    // c → d → c through lib.rs's re-export `crate::Thing`; comments and strings are not code.
    write("c.rs", "pub struct Thing;\n// use crate::a::Alpha;\nfn g() -> &'static str { \"crate::b::Beta\" }\nuse crate::d::Delta;\n");
    write("d.rs", "pub struct Delta(crate::Thing);\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n");
    // Siblings in a folder through super::, and a child using its mod.rs: only the former counts.
    write("report/mod.rs", "mod x;\nmod y;\npub struct Options;\nuse x::X;\n");
    write("report/x.rs", "use super::{y, Options};\npub struct X(y::Y);\n");
    write("report/y.rs", "pub struct Y;\nfn h() { let _ = super::x::X; }\n");
    let circles = import_circles(src);
    assert_eq!(
        circles,
        [
            "a.rs ↔ b.rs (a.rs:1 → b.rs; b.rs:2 → a.rs)",
            "c.rs ↔ d.rs (c.rs:4 → d.rs; d.rs:1 → c.rs)",
            "report/x.rs ↔ report/y.rs (report/x.rs:1 → report/y.rs; report/y.rs:2 → report/x.rs)",
        ]
    );
    // Undo the report circle and the c ↔ d one: two left, then none.
    write("report/y.rs", "pub struct Y;\n");
    write("d.rs", "pub struct Delta;\n");
    assert_eq!(import_circles(src).len(), 1);
    write("b.rs", "pub struct Beta;\n");
    assert!(import_circles(src).is_empty());
    // Test code is a consumer: a test module or a test-only file using back is no circle.
    write(
        "a.rs",
        "use crate::b::Beta;\n#[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::c::Thing;\n}\n",
    );
    write("b.rs", "pub struct Beta;\n#[cfg(test)]\nfn helper() { crate::a::f(); }\n");
    write("c.rs", "#[cfg(test)]\nmod fixtures;\n");
    write("c/fixtures.rs", "use crate::a::Alpha;\n");
    write("lib.rs", "mod a;\nmod b;\nmod c;\n#[cfg(test)]\nmod checks;\n");
    write("checks.rs", "use crate::d::Delta;\n");
    write("d.rs", "use crate::checks::Helper;\n");
    assert!(import_circles(src).is_empty(), "{:?}", import_circles(src));
    // Three files in a ring are one circle.
    write("a.rs", "use crate::b::Beta;\n");
    write("b.rs", "use crate::c::Thing;\n");
    write("c.rs", "use crate::a::Alpha;\n");
    assert_eq!(
        import_circles(src),
        ["a.rs → b.rs → c.rs → a.rs (a.rs:1 → b.rs; b.rs:1 → c.rs; c.rs:1 → a.rs)"]
    );
}

/// The circles among the files under `src` (a crate's source folder), each as its files in
/// order and the first line of each edge; empty when the files' imports run one way.
fn import_circles(src: &Path) -> Vec<String> {
    let files = rust_files(src);
    let modules: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_path(src, f), f.clone())).collect();
    let parsed: Vec<(PathBuf, Vec<String>, ParsedFile)> = files
        .iter()
        .map(|f| (f.clone(), module_path(src, f), parse(&std::fs::read_to_string(f).unwrap())))
        .collect();
    // Files that are test code (`#[cfg(test)] mod tests;`) are consumers, like tests/.
    let test_files: BTreeSet<Vec<String>> = parsed
        .iter()
        .flat_map(|(_, module, file)| file.test_modules.iter().map(|t| concat(module, t)))
        .collect();
    let parsed: Vec<_> = parsed.into_iter().filter(|(_, module, _)| !test_files.contains(module)).collect();
    let mut crate_map = CrateMap { modules: modules.keys().cloned().collect(), uses: BTreeMap::new() };
    for (_, module, file) in &parsed {
        for inline in &file.inline_modules {
            crate_map.modules.insert(concat(module, inline));
        }
    }
    for (_, module, file) in &parsed {
        for u in &file.uses {
            let scope = concat(module, &u.scope);
            if let (Some(target), Some(name)) = (crate_map.absolute(&scope, &u.path), &u.name) {
                crate_map.uses.entry(scope).or_default().insert(name.clone(), target);
            }
        }
    }
    // Edges between files, with the line of the first reference.
    let mut edges: BTreeMap<(PathBuf, PathBuf), usize> = BTreeMap::new();
    for (path, module, file) in &parsed {
        let references = file
            .uses
            .iter()
            .map(|u| (&u.scope, &u.path, u.line))
            .chain(file.paths.iter().map(|p| (&p.scope, &p.path, p.line)));
        for (scope, segments, line) in references {
            let Some(absolute) = crate_map.absolute(&concat(module, scope), segments) else { continue };
            let target = crate_map.resolve(&absolute, 0);
            // The file that defines the target: its longest prefix that is a file's module.
            let Some(target_module) =
                (0..=target.len()).rev().map(|n| &target[..n]).find(|m| modules.contains_key(*m))
            else {
                continue;
            };
            let related = target_module.starts_with(module) || module.starts_with(target_module);
            if !related {
                edges.entry((path.clone(), modules[target_module].clone())).or_insert(line);
            }
        }
    }
    let name = |f: &Path| f.strip_prefix(src).unwrap().display().to_string();
    let mut circles = Vec::new();
    for component in strongly_connected(&files, &edges) {
        let cycle = one_cycle(&component, &edges);
        let arrows: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{}:{} → {}", name(&w[0]), edges[&(w[0].clone(), w[1].clone())], name(&w[1])))
            .collect();
        let files: Vec<String> = cycle.iter().map(|f| name(f)).collect();
        let shape =
            if cycle.len() == 3 { format!("{} ↔ {}", files[0], files[1]) } else { files.join(" → ") };
        let more = match component.len() + 1 - cycle.len() {
            0 => String::new(),
            n => format!(
                ", and {n} more file(s) in the same knot: {}",
                component
                    .iter()
                    .filter(|f| !cycle.contains(f))
                    .map(|f| name(f))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        circles.push(format!("{shape} ({}){more}", arrows.join("; ")));
    }
    circles.sort();
    circles
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The module a file is: `report/markdown.rs` → `[report, markdown]`, `report/mod.rs` →
/// `[report]`, `lib.rs` / `main.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main")
        || parts.last().is_some_and(|p| p == "mod")
    {
        parts.pop();
    }
    parts
}

fn concat(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().chain(b).cloned().collect()
}

/// The crate's modules and what each imports by name, to find what a path names.
struct CrateMap {
    /// Every module: files' and inline ones (`mod tests { … }`).
    modules: BTreeSet<Vec<String>>,
    /// Per module, each name it imports (`use a::b as c`: `c`) → the absolute path.
    uses: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
}

impl CrateMap {
    /// `segments` as written in module `scope`, from the crate root; `None` for another crate.
    fn absolute(&self, scope: &[String], segments: &[String]) -> Option<Vec<String>> {
        let mut base = scope.to_vec();
        let mut rest = segments;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            // A bare first segment: a child module of the scope (2018 paths), else another crate.
            Some(first) if self.modules.contains(&concat(scope, &[first.to_string()])) => {}
            _ => return None,
        }
        Some(concat(&base, rest))
    }

    /// The module an absolute path ends in, following imports of the modules it passes through
    /// (a name a module re-exports is taken from where it comes from).
    fn resolve(&self, path: &[String], depth: usize) -> Vec<String> {
        let mut module = Vec::new();
        for (i, segment) in path.iter().enumerate() {
            let next = concat(&module, std::slice::from_ref(segment));
            if self.modules.contains(&next) {
                module = next;
                continue;
            }
            if let Some(target) = self.uses.get(&module).and_then(|u| u.get(segment)) {
                if depth < 16 {
                    return self.resolve(&concat(target, &path[i + 1..]), depth + 1);
                }
            }
            break;
        }
        module
    }
}

/// A path in a file: the inline modules it sits in, its segments, its line.
struct PathRef {
    scope: Vec<String>,
    path: Vec<String>,
    line: usize,
}

/// One name a `use` brings in (`name` is `None` for a glob).
struct UseRef {
    scope: Vec<String>,
    path: Vec<String>,
    name: Option<String>,
    line: usize,
}

#[derive(Default)]
struct ParsedFile {
    uses: Vec<UseRef>,
    paths: Vec<PathRef>,
    /// Inline modules (`mod tests { … }`), as paths below the file's module.
    inline_modules: Vec<Vec<String>>,
    /// File modules declared under `#[cfg(test)]`, as paths below the file's module.
    test_modules: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The identifiers, `::` and punctuation of Rust source, with their lines; comments, strings
/// and character literals dropped.
fn tokens(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                line += usize::from(chars[i] == '\n');
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{1F600}'), else a lifetime or label.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ident_char(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // Raw and byte strings: r"…", r#"…"#, b"…", br#"…"#.
            if matches!(word.as_str(), "r" | "br" | "b") && matches!(chars.get(i), Some('"') | Some('#')) {
                let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
                if chars.get(i + hashes) == Some(&'"') {
                    i += hashes + 1;
                    let raw = word != "b";
                    loop {
                        if i >= chars.len() {
                            break;
                        }
                        if !raw && chars[i] == '\\' {
                            i += 2;
                            continue;
                        }
                        if chars[i] == '"'
                            && chars[i + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes
                        {
                            i += 1 + hashes;
                            break;
                        }
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                    continue;
                }
            }
            out.push((Token::Ident(word), line));
        } else if c == ':' && next == Some(':') {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push((Token::Punct(c), line));
            }
            i += 1;
        }
    }
    out
}

/// The `use` items, `crate::`/`super::`/`self::` paths and inline modules of a file.
fn parse(text: &str) -> ParsedFile {
    let tokens = tokens(text);
    let mut file = ParsedFile::default();
    // Inline modules open at this brace depth.
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    let ident = |t: Option<&(Token, usize)>| match t {
        Some((Token::Ident(s), _)) => Some(s.clone()),
        _ => None,
    };
    while i < tokens.len() {
        let scope: Vec<String> = open.iter().map(|(n, _)| n.clone()).collect();
        if let Some(item) = cfg_test_item(&tokens, i) {
            // `#[cfg(test)] mod tests;`: that file is test code; any other item is skipped.
            if let (Some(Token::Ident(kw)), Some(name), Some(Token::Punct(';'))) = (
                tokens.get(item).map(|t| &t.0),
                ident(tokens.get(item + 1)),
                tokens.get(item + 2).map(|t| &t.0),
            ) {
                if kw == "mod" {
                    file.test_modules.push(concat(&scope, std::slice::from_ref(&name)));
                }
            }
            i = item_end(&tokens, item);
            continue;
        }
        match &tokens[i] {
            (Token::Punct('{'), _) => depth += 1,
            (Token::Punct('}'), _) => {
                depth -= 1;
                if open.last().is_some_and(|(_, d)| *d == depth) {
                    open.pop();
                }
            }
            (Token::Ident(kw), _) if kw == "mod" => {
                if let (Some(name), Some((Token::Punct('{'), _))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    file.inline_modules.push(concat(&scope, std::slice::from_ref(&name)));
                    open.push((name, depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            (Token::Ident(kw), line)
                if kw == "use"
                    && matches!(
                        tokens.get(i + 1),
                        Some((Token::Ident(_), _)) | Some((Token::PathSep, _)) | Some((Token::Punct('{'), _))
                    ) =>
            {
                let end =
                    (i..tokens.len()).find(|&j| tokens[j].0 == Token::Punct(';')).unwrap_or(tokens.len());
                let mut items = Vec::new();
                use_tree(&tokens[i + 1..end], &mut Vec::new(), &mut items);
                for (path, name) in items {
                    file.uses.push(UseRef { scope: scope.clone(), path, name, line: *line });
                }
                i = end + 1;
                continue;
            }
            (Token::Ident(first), line)
                if matches!(first.as_str(), "crate" | "super" | "self")
                    && tokens.get(i + 1).is_some_and(|t| t.0 == Token::PathSep)
                    && !(i > 0 && matches!(&tokens[i - 1].0, Token::PathSep))
                    && !(i > 0 && matches!(&tokens[i - 1].0, Token::Ident(w) if w == "in")) =>
            {
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while tokens.get(j).is_some_and(|t| t.0 == Token::PathSep) {
                    match ident(tokens.get(j + 1)) {
                        Some(s) => path.push(s),
                        None => break,
                    }
                    j += 2;
                }
                file.paths.push(PathRef { scope: scope.clone(), path, line: *line });
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    file
}

/// Where the item after a `#[cfg(test)]` at `i` starts (past any further attributes), if there
/// is one: test code uses the crate as a consumer does, and is not part of its layering.
fn cfg_test_item(tokens: &[(Token, usize)], i: usize) -> Option<usize> {
    let attribute = ["#", "[", "cfg", "(", "test", ")", "]"];
    let text = |t: &(Token, usize)| match &t.0 {
        Token::Ident(s) => s.clone(),
        Token::PathSep => "::".into(),
        Token::Punct(c) => c.to_string(),
    };
    if tokens.len() < i + attribute.len() || !tokens[i..i + attribute.len()].iter().map(text).eq(attribute) {
        return None;
    }
    let mut at = i + attribute.len();
    // Further attributes: `#[…]`.
    while tokens.get(at).is_some_and(|t| t.0 == Token::Punct('#')) {
        let mut level = 0;
        while let Some(t) = tokens.get(at) {
            at += 1;
            match t.0 {
                Token::Punct('[') => level += 1,
                Token::Punct(']') => {
                    level -= 1;
                    if level == 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    Some(at)
}

/// The token after the item starting at `start`: past its `;`, or its closing `}` (a `use`
/// group's `;` then stays behind, which is harmless).
fn item_end(tokens: &[(Token, usize)], start: usize) -> usize {
    let mut depth = 0;
    for (j, t) in tokens.iter().enumerate().skip(start) {
        match t.0 {
            Token::Punct(';') if depth == 0 => return j + 1,
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// The (path, imported name) pairs of a use tree (`a::{b, c::d as e, f::*}`); a glob's name is
/// `None`, and `self` in braces names the prefix itself.
fn use_tree(
    tokens: &[(Token, usize)],
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let depth_before = prefix.len();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::PathSep => i += 1,
            Token::Punct('*') => {
                out.push((prefix.clone(), None));
                i += 1;
            }
            Token::Punct('{') => {
                // Split the group at its top-level commas.
                let mut level = 0;
                let mut start = i + 1;
                let mut j = i + 1;
                while j < tokens.len() {
                    match tokens[j].0 {
                        Token::Punct('{') => level += 1,
                        Token::Punct('}') if level == 0 => break,
                        Token::Punct('}') => level -= 1,
                        Token::Punct(',') if level == 0 => {
                            use_tree(&tokens[start..j], prefix, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                use_tree(&tokens[start..j.min(tokens.len())], prefix, out);
                i = j + 1;
            }
            Token::Ident(word) => {
                let is_last = !tokens.get(i + 1).is_some_and(|t| t.0 == Token::PathSep);
                if is_last {
                    let alias = match (tokens.get(i + 1), tokens.get(i + 2)) {
                        (Some((Token::Ident(a), _)), Some((Token::Ident(name), _))) if a == "as" => {
                            name.clone()
                        }
                        _ => word.clone(),
                    };
                    if word == "self" {
                        let name = prefix.last().cloned();
                        out.push((prefix.clone(), if alias == "self" { name } else { Some(alias) }));
                    } else {
                        out.push((concat(prefix, std::slice::from_ref(word)), Some(alias)));
                    }
                    break;
                }
                prefix.push(word.clone());
                i += 1;
            }
            Token::Punct(_) => i += 1,
        }
    }
    prefix.truncate(depth_before);
}

/// The strongly connected components of more than one file (Tarjan), each sorted.
fn strongly_connected(files: &[PathBuf], edges: &BTreeMap<(PathBuf, PathBuf), usize>) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        edges: &'a BTreeMap<(PathBuf, PathBuf), usize>,
        index: BTreeMap<PathBuf, usize>,
        low: BTreeMap<PathBuf, usize>,
        stack: Vec<PathBuf>,
        on_stack: BTreeSet<PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit(s: &mut State, v: &PathBuf) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let targets: Vec<PathBuf> = s.edges.keys().filter(|(a, _)| a == v).map(|(_, b)| b.clone()).collect();
        for w in &targets {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for f in files {
        if !s.index.contains_key(f) {
            visit(&mut s, f);
        }
    }
    s.out
}

/// A shortest cycle through the first file of a component, first file repeated at the end.
fn one_cycle(component: &[PathBuf], edges: &BTreeMap<(PathBuf, PathBuf), usize>) -> Vec<PathBuf> {
    let start = &component[0];
    // Breadth-first from start inside the component, back to start.
    let mut parent: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(v) = queue.pop_front() {
        for (_, w) in edges.keys().filter(|(a, b)| a == &v && component.contains(b)) {
            if w == start {
                // v, its parent, …, a successor of start (whose parent is start).
                let mut cycle = vec![v.clone()];
                while let Some(p) = parent.get(cycle.last().unwrap()) {
                    cycle.push(p.clone());
                }
                cycle.reverse();
                cycle.push(start.clone());
                return cycle;
            }
            if !parent.contains_key(w) && w != start {
                parent.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    unreachable!("a strongly connected component has a cycle through each of its files")
}
