//! Positions in configuration text, so that every error names the line
//! and column of what it is about.

/// 1-based line and column of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where each line of a text starts. Compiling a rules file names the
/// line of every rule and window it holds; scanning from the top for each
/// one made a 1000-rule file cost ~130 ms (quadratic), a binary search in
/// this index costs nothing noticeable.
pub struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset of the first byte of each line; the first is 0.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    /// The same answer as [`line_column`] for the indexed text.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // The last line starting at or before `offset`.
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn index_agrees_with_the_scan(text in "(a|é|\n|\r\n| ){0,60}", at in 0usize..80) {
            // Offsets inside a character are never asked for: spans start
            // at characters.
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            prop_assert_eq!(LineIndex::new(&text).line_column(at), line_column(&text, at));
        }
    }
}
