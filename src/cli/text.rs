//! Text for a terminal: tables whose columns fit their contents, and values that cannot
//! rewrite the screen. An identity id or a display name comes from an HR feed or a request
//! body; a control character or a bidi override in it (`\u{202e}`) must not move the
//! cursor, recolour the terminal or make `evil\u{202e}txt.exe` read backwards.

/// `s` with control characters and bidi/invisible formatting characters written as
/// escapes (`\n`, `\u{202e}`); everything else as it is.
pub fn safe(s: &str) -> String {
    if !s.chars().any(needs_escape) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    crate::model::ident::is_control_or_invisible(c)
}

/// A table printed with two spaces between columns, each as wide as its widest cell
/// (capped: a longer cell is cut with `…`). The last column is never padded or cut.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns aligned right (numbers).
    right: Vec<bool>,
}

/// The widest a column other than the last grows.
const MAX_WIDTH: usize = 40;

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            right: vec![false; header.len()],
        }
    }

    pub fn right(mut self, column: usize) -> Self {
        if let Some(r) = self.right.get_mut(column) {
            *r = true;
        }
        self
    }

    /// Adds a row; every cell is made terminal-safe.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| safe(c)).collect());
    }

    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count().min(MAX_WIDTH));
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (width, right)) in widths.iter().zip(&self.right).enumerate() {
                let cell = r.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    line.push_str("  ");
                }
                if i + 1 == n {
                    line.push_str(cell);
                    continue;
                }
                let cell = cut(cell, *width);
                let pad = width.saturating_sub(cell.chars().count());
                if *right {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(&cell);
                } else {
                    line.push_str(&cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(safe("ada"), "ada");
        assert_eq!(safe("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        assert_eq!(safe("a\x1b[31mred"), "a\\u{1b}[31mred");
        assert_eq!(safe("two\nlines\t"), "two\\nlines\\t");
        assert_eq!(safe("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        assert_eq!(safe("Zoë Ünal"), "Zoë Ünal");
    }

    #[test]
    fn columns_fit_their_widest_cell() {
        let mut t = Table::new(&["TASK", "STATUS", "IDENTITY", "OWNER"]).right(0);
        t.row(vec![
            "T1".into(),
            "CANCELED".into(),
            "Ada".into(),
            "o@x".into(),
        ]);
        t.row(vec![
            "T12345".into(),
            "OPEN".into(),
            "Maximiliane Wolfeschlegelsteinhausenbergerdorff".into(),
            "p@x".into(),
        ]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        // OWNER starts at the same column on every line.
        let at: Vec<usize> = lines
            .iter()
            .map(|l| {
                let byte = l.find("o@x").or(l.find("p@x")).or(l.find("OWNER")).unwrap();
                l[..byte].chars().count()
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(
            text.contains("Maximiliane Wolfeschlegelsteinhausenber…"),
            "{text}"
        );
        assert!(lines[1].starts_with("    T1  CANCELED"), "{text}");
    }
}
