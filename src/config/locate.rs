//! Where in a TOML file a problem is (issue 35): every configuration problem names file,
//! line and column, as a compiler's error does, whichever check found it. The checks
//! themselves speak in keys (`retry.max_attempts`, `entitlement[2].source`) or in toml's
//! own errors; this module turns either into a position, once, after loading.

use toml::de::{DeTable, DeValue};

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// One step of a key path: a table key, or an index into an array (0-based).
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` as steps; None for a key that is not a path (`identity \`x\``).
fn steps(key: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return None;
        }
        out.push(Step::Key(name));
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']')?;
            out.push(Step::Index(index.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// The position of `key` in `text`: the deepest step of its path the file has, so that a
/// missing `retry.max_attempts` points at `[retry]` and an unknown item index at its
/// array. None when the text does not parse or holds no step of the path.
pub fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let steps = steps(key)?;
    let root = DeTable::parse(text).ok()?;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    let mut found = None;
    for step in steps {
        let next = match (step, table, value) {
            (Step::Key(name), Some(t), _) => t
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == name)
                .map(|(k, v)| (k.span(), v)),
            (Step::Index(i), _, Some(DeValue::Array(a))) => a.get(i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((span, v)) = next else { break };
        found = Some(span.start);
        value = Some(v.get_ref());
        table = v.get_ref().as_table();
    }
    found.map(|offset| line_col(text, offset))
}

/// The key a toml deserialization error is about, when it carries no position (errors
/// from a `toml::Value`, as the connectors' settings are read): its `in \`a.b\`` line and
/// the field an `unknown field \`x\`` names.
pub fn key_of_error(message: &str) -> Option<String> {
    let quoted = |line: &str, prefix: &str| {
        let rest = line.split(prefix).nth(1)?;
        rest.split('`').next().map(str::to_string)
    };
    let path = message
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("in `"))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let field = message
        .lines()
        .find_map(|l| quoted(l, "unknown field `").or_else(|| quoted(l, "duplicate field `")));
    match (path, field) {
        (Some(p), Some(f)) => Some(format!("{p}.{f}")),
        (p, f) => p.or(f),
    }
}

/// A toml error's own position and its message without the source excerpt: "TOML parse
/// error at line 3, column 7" plus the caret lines become (3, 7) and the text below them.
pub fn split_toml_error(message: &str) -> Option<((usize, usize), String)> {
    let first = message.lines().next()?;
    let rest = first.strip_prefix("TOML parse error at line ")?;
    let (line, column) = rest.split_once(", column ")?;
    let at = (line.trim().parse().ok()?, column.trim().parse().ok()?);
    let text: Vec<&str> = message
        .lines()
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('|') && !is_excerpt(l))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Some((at, text.join("; ")))
}

/// `12 | key = value`: the excerpt line of a toml error.
fn is_excerpt(line: &str) -> bool {
    line.split_once(" | ")
        .is_some_and(|(n, _)| !n.trim().is_empty() && n.trim().chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "id = \"crm\"\ntype = \"ldap\"\n\n[retry]\nmax_attempts = 0\n\n[[group]]\nname = \"a\"\n\n[[group]]\nname = \"b\"\n";

    #[test]
    fn finds_keys_tables_and_array_elements() {
        assert_eq!(locate(TEXT, "type"), Some((2, 1)));
        assert_eq!(locate(TEXT, "retry.max_attempts"), Some((5, 1)));
        // Missing below an existing table: the table.
        assert_eq!(locate(TEXT, "retry.initial"), Some((4, 2)));
        assert_eq!(locate(TEXT, "group[1].name"), Some((11, 1)));
        assert_eq!(locate(TEXT, "nothing"), None);
        assert_eq!(locate(TEXT, "identity `x`"), None);
        assert_eq!(locate("not = = toml", "not"), None);
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("é = 1\n  ü = 2", 10), (2, 3));
        assert_eq!(line_col("abc", 99), (1, 4));
    }

    #[test]
    fn reads_the_key_out_of_positionless_errors() {
        assert_eq!(
            key_of_error("unknown field `colour`, expected one of `a`, `b`\n").as_deref(),
            Some("colour")
        );
        assert_eq!(
            key_of_error("invalid type: string \"x\", expected u32\nin `retry.max_attempts`\n")
                .as_deref(),
            Some("retry.max_attempts")
        );
        assert_eq!(
            key_of_error("unknown field `lenght`, expected `length`\nin `account.password`\n")
                .as_deref(),
            Some("account.password.lenght")
        );
        assert_eq!(key_of_error("something else"), None);
    }

    #[test]
    fn splits_a_parse_error_into_position_and_words() {
        let e = toml::from_str::<toml::Table>("a = 1\nb = = 2\n")
            .unwrap_err()
            .to_string();
        let ((line, column), text) = split_toml_error(&e).unwrap();
        assert_eq!((line, column), (2, 5));
        assert!(!text.contains(" | "), "{text}");
        assert!(!text.is_empty());
    }
}
