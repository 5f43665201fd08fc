//! Template functions (DESIGN §24): a placeholder with parentheses is an expression —
//! attributes, literals and calls of `lower`, `upper`, `ascii`, `truncate(x, n)` and
//! `unique(x, n)`, written one after another to be joined:
//! `{unique(lower(ascii(firstName)).lower(ascii(lastName)), 20)}`. Names derived from
//! people's names need them: AD's `sAMAccountName` is at most 20 characters, and two Ada
//! Lovelaces must not get one account.
//!
//! Inside an expression a name (letters, digits, `_`) is an attribute, `'text'` is text,
//! and any other character but `(`, `)`, `,` and spaces stands for itself (`.`, `-`,
//! `@`). A placeholder without parentheses names one attribute, whatever its characters,
//! as before.

use crate::Identity;

/// One part of an expression; the parts' values are joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Term {
    Attr(String),
    Lit(String),
    Call {
        f: Func,
        arg: Vec<Term>,
        /// `truncate`'s and `unique`'s limit, in characters.
        limit: Option<usize>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    Lower,
    Upper,
    Ascii,
    Truncate,
    Unique,
}

impl Func {
    fn named(name: &str) -> Option<Func> {
        Some(match name {
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            "ascii" => Func::Ascii,
            "truncate" => Func::Truncate,
            "unique" => Func::Unique,
            _ => return None,
        })
    }

    fn takes_limit(self) -> bool {
        matches!(self, Func::Truncate | Func::Unique)
    }
}

/// Parses a placeholder's text. Errors say what is wrong, for the template's error.
pub(super) fn parse(src: &str) -> Result<Vec<Term>, String> {
    let mut p = Parser {
        chars: src.chars().collect(),
        at: 0,
    };
    let terms = p.terms()?;
    match p.peek() {
        None => Ok(terms),
        Some(c) => Err(format!("unexpected `{c}`")),
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

fn is_name(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Parser {
    fn peek(&mut self) -> Option<char> {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
        self.chars.get(self.at).copied()
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let start = self.at;
        while self.chars.get(self.at).is_some_and(|c| f(*c)) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// Terms up to the end, a `,` or a `)` (left for the caller).
    fn terms(&mut self) -> Result<Vec<Term>, String> {
        let mut out: Vec<Term> = Vec::new();
        while let Some(c) = self.peek() {
            let term = match c {
                ',' | ')' => break,
                '(' => return Err("a `(` that follows no function name".into()),
                '\'' => {
                    self.at += 1;
                    let text = self.take_while(|c| c != '\'');
                    if self.chars.get(self.at) != Some(&'\'') {
                        return Err("a `'` is never closed".into());
                    }
                    self.at += 1;
                    Term::Lit(text)
                }
                c if is_name(c) => {
                    let name = self.take_while(is_name);
                    if self.peek() == Some('(') {
                        self.at += 1;
                        self.call(&name)?
                    } else {
                        Term::Attr(name)
                    }
                }
                c => {
                    self.at += 1;
                    Term::Lit(c.to_string())
                }
            };
            // Literal characters side by side are one literal.
            match (out.last_mut(), term) {
                (Some(Term::Lit(prev)), Term::Lit(more)) => prev.push_str(&more),
                (_, term) => out.push(term),
            }
        }
        Ok(out)
    }

    /// A call's arguments and closing `)`, once its name and `(` are read.
    fn call(&mut self, name: &str) -> Result<Term, String> {
        let f = Func::named(name).ok_or_else(|| {
            format!("no function `{name}` (there are lower, upper, ascii, truncate and unique)")
        })?;
        let arg = self.terms()?;
        if arg.is_empty() {
            return Err(format!("`{name}` needs something to work on"));
        }
        let mut limit = None;
        if self.peek() == Some(',') {
            self.at += 1;
            self.peek();
            let digits = self.take_while(|c| c.is_ascii_digit());
            let n: usize = digits
                .parse()
                .map_err(|_| format!("`{name}`'s limit must be a number of characters"))?;
            if n == 0 || (f == Func::Unique && n < 2) {
                return Err(format!("`{name}`'s limit of {n} leaves no room"));
            }
            limit = Some(n);
        }
        if self.peek() != Some(')') {
            return Err(format!("`{name}(` is never closed"));
        }
        self.at += 1;
        match (f.takes_limit(), limit) {
            (true, None) => Err(format!("`{name}` needs a limit: `{name}(…, 20)`")),
            (false, Some(_)) => Err(format!("`{name}` takes no limit")),
            _ => Ok(Term::Call { f, arg, limit }),
        }
    }
}

/// The attributes an expression reads.
pub(super) fn attributes(terms: &[Term], out: &mut Vec<String>) {
    for t in terms {
        match t {
            Term::Attr(a) => out.push(a.clone()),
            Term::Lit(_) => {}
            Term::Call { arg, .. } => attributes(arg, out),
        }
    }
}

/// Whether an expression asks for a unique value.
pub(super) fn has_unique(terms: &[Term]) -> bool {
    terms.iter().any(|t| match t {
        Term::Call { f, arg, .. } => *f == Func::Unique || has_unique(arg),
        _ => false,
    })
}

/// An expression's value for `identity`; `nth` is the try at a unique value: 1 is the
/// value itself, 2 and on add that number, cut so that the whole stays within the limit.
/// `Err` names the attribute the identity lacks.
pub(super) fn eval(terms: &[Term], identity: &Identity, nth: u32) -> Result<String, String> {
    let mut out = String::new();
    for t in terms {
        match t {
            Term::Attr(a) => out.push_str(identity.get(a).ok_or_else(|| a.clone())?),
            Term::Lit(l) => out.push_str(l),
            Term::Call { f, arg, limit } => {
                let v = eval(arg, identity, nth)?;
                let n = limit.unwrap_or(usize::MAX);
                out.push_str(&match f {
                    Func::Lower => v.to_lowercase(),
                    Func::Upper => v.to_uppercase(),
                    Func::Ascii => deunicode::deunicode(&v),
                    Func::Truncate => cut(&v, n),
                    Func::Unique if nth <= 1 => cut(&v, n),
                    Func::Unique => {
                        let suffix = nth.to_string();
                        cut(&v, n.saturating_sub(suffix.chars().count())) + &suffix
                    }
                });
            }
        }
    }
    Ok(out)
}

/// The first `n` characters (not bytes: `ü` is one).
fn cut(v: &str, n: usize) -> String {
    v.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn person(first: &str, last: &str) -> Identity {
        Identity {
            id: "p1".into(),
            attributes: BTreeMap::from([
                ("firstName".into(), first.into()),
                ("lastName".into(), last.into()),
            ]),
        }
    }

    fn value(src: &str, who: &Identity, nth: u32) -> Result<String, String> {
        eval(&parse(src)?, who, nth)
    }

    #[test]
    fn functions_lower_upper_and_transliterate() {
        let jose = person("José", "Müller-Lüdenscheidt");
        assert_eq!(value("lower(firstName)", &jose, 1).unwrap(), "josé");
        assert_eq!(
            value("upper(ascii(lastName))", &jose, 1).unwrap(),
            "MULLER-LUDENSCHEIDT"
        );
        let names = person("Søren Ærø", "Groß");
        assert_eq!(
            value("ascii(firstName) ascii(lastName)", &names, 1).unwrap(),
            "Soren AEroGross"
        );
        assert_eq!(
            value("ascii(firstName)' 'ascii(lastName)", &names, 1).unwrap(),
            "Soren AEro Gross",
            "a quoted literal keeps its space"
        );
    }

    #[test]
    fn truncate_counts_characters_not_bytes() {
        let who = person("Ünal", "Çelik");
        assert_eq!(value("truncate(firstName, 2)", &who, 1).unwrap(), "Ün");
        assert_eq!(value("truncate(firstName, 20)", &who, 1).unwrap(), "Ünal");
    }

    #[test]
    fn unique_tries_numbered_values_within_the_limit() {
        let src = "unique(lower(ascii(firstName)).lower(ascii(lastName)), 20)";
        let ada = person("Ada", "Lovelace");
        assert_eq!(value(src, &ada, 1).unwrap(), "ada.lovelace");
        assert_eq!(value(src, &ada, 2).unwrap(), "ada.lovelace2");
        let long = person("Maximiliane", "Wolkenstein-Rodenegg");
        let first = value(src, &long, 1).unwrap();
        assert_eq!(first, "maximiliane.wolkenst");
        assert_eq!(first.chars().count(), 20);
        assert_eq!(value(src, &long, 2).unwrap(), "maximiliane.wolkens2");
        assert_eq!(value(src, &long, 12).unwrap(), "maximiliane.wolken12");
        assert!(has_unique(&parse(src).unwrap()));
        assert!(!has_unique(&parse("lower(firstName)").unwrap()));
    }

    #[test]
    fn an_expression_names_the_attributes_it_reads() {
        let mut names = Vec::new();
        attributes(
            &parse("unique(lower(firstName).lastName, 20)").unwrap(),
            &mut names,
        );
        assert_eq!(names, ["firstName", "lastName"]);
        let err = value("lower(email)", &person("A", "B"), 1).unwrap_err();
        assert_eq!(err, "email");
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (src, says) in [
            ("shout(firstName)", "no function `shout`"),
            ("lower()", "needs something to work on"),
            ("truncate(firstName)", "needs a limit"),
            ("lower(firstName, 3)", "takes no limit"),
            ("truncate(firstName, x)", "must be a number"),
            ("unique(firstName, 1)", "leaves no room"),
            ("lower(firstName", "never closed"),
            ("lower(firstName))", "unexpected `)`"),
            ("(firstName)", "follows no function name"),
            ("lower('x)", "never closed"),
        ] {
            let e = parse(src).err().unwrap_or_default();
            assert!(e.contains(says), "{src}: {e}");
        }
    }
}
