//! Diagnostics with source spans, rendered miette-style for people or as JSON for tools.
//!
//! Message style (after cedar): lowercase, no trailing period, user input in backticks.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;
use std::fmt;
use std::ops::Range;

/// Index of a file in a [`Sources`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub usize);

/// A file the compiler read (a policy file or a schema DDL file).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// Every file read in one run, so diagnostics can point into any of them.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<String>) -> SourceId {
        self.files.push(SourceFile { path: path.into(), text: text.into() });
        SourceId(self.files.len() - 1)
    }

    pub fn get(&self, id: SourceId) -> &SourceFile {
        &self.files[id.0]
    }

    /// 1-based line and column of a byte offset (columns count characters).
    pub fn line_col(&self, id: SourceId, offset: usize) -> (usize, usize) {
        let text = &self.get(id).text;
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// Byte offset of a 1-based line and column.
    pub fn offset_of(&self, id: SourceId, line: usize, col: usize) -> usize {
        let text = &self.get(id).text;
        let mut offset = 0;
        for (i, l) in text.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                return offset + l.char_indices().nth(col.saturating_sub(1)).map_or(l.len(), |(b, _)| b);
            }
            offset += l.len();
        }
        text.len()
    }
}

/// Errors sort before warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A place in a source file with a short explanation.
#[derive(Debug, Clone)]
pub struct Label {
    pub source: SourceId,
    pub span: Range<usize>,
    pub text: String,
}

/// One problem found in the policy files or the schema.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Stable identifier, e.g. `tenancy::uncovered-table`.
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    /// The first label is the primary location; all labels are in the same file.
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic { code, severity: Severity::Error, message: message.into(), labels: vec![], help: None }
    }

    pub fn label(mut self, source: SourceId, span: Range<usize>, text: impl Into<String>) -> Self {
        self.labels.push(Label { source, span, text: text.into() });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The pieces miette needs, borrowed from a diagnostic and its file.
struct Renderable<'a> {
    diag: &'a Diagnostic,
    source: Option<NamedSource<String>>,
}

impl fmt::Debug for Renderable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}
impl fmt::Display for Renderable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}
impl std::error::Error for Renderable<'_> {}

impl miette::Diagnostic for Renderable<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        Some(Box::new(self.diag.labels.iter().enumerate().map(|(i, l)| {
            let span = SourceSpan::from(l.span.start..l.span.end.max(l.span.start));
            let text = (!l.text.is_empty()).then(|| l.text.clone());
            if i == 0 {
                LabeledSpan::new_primary_with_span(text, span)
            } else {
                LabeledSpan::new_with_span(text, span)
            }
        })))
    }
}

/// Renders diagnostics for a terminal (`color`) or for logs and golden files (no color).
pub fn render_human(sources: &Sources, diags: &[Diagnostic], color: bool) -> String {
    let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_links(false);
    let mut out = String::new();
    for diag in diags {
        let source = diag.labels.first().map(|l| {
            let file = sources.get(l.source);
            NamedSource::new(file.path.clone(), file.text.clone())
        });
        let r = Renderable { diag, source };
        if handler.render_report(&mut out, &r).is_err() {
            out.push_str(&format!("error[{}]: {}\n", diag.code, diag.message));
        }
    }
    out
}

#[derive(Serialize)]
struct JsonLabel {
    file: String,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    text: String,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'a str,
    severity: Severity,
    message: &'a str,
    file: Option<String>,
    line: Option<usize>,
    column: Option<usize>,
    labels: Vec<JsonLabel>,
    help: Option<&'a str>,
}

/// Renders diagnostics as a JSON array, one object per diagnostic, with 1-based positions.
pub fn render_json(sources: &Sources, diags: &[Diagnostic]) -> String {
    let items: Vec<JsonDiagnostic> = diags
        .iter()
        .map(|d| {
            let labels: Vec<JsonLabel> = d
                .labels
                .iter()
                .map(|l| {
                    let (line, column) = sources.line_col(l.source, l.span.start);
                    let (end_line, end_column) = sources.line_col(l.source, l.span.end);
                    JsonLabel {
                        file: sources.get(l.source).path.clone(),
                        line,
                        column,
                        end_line,
                        end_column,
                        text: l.text.clone(),
                    }
                })
                .collect();
            JsonDiagnostic {
                code: d.code,
                severity: d.severity,
                message: &d.message,
                file: labels.first().map(|l| l.file.clone()),
                line: labels.first().map(|l| l.line),
                column: labels.first().map(|l| l.column),
                labels,
                help: d.help.as_deref(),
            }
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_round_trip() {
        let mut s = Sources::default();
        let id = s.add("a.toml", "ab\ncdé\nf");
        assert_eq!(s.line_col(id, 0), (1, 1));
        assert_eq!(s.line_col(id, 4), (2, 2));
        assert_eq!(s.offset_of(id, 2, 2), 4);
        assert_eq!(s.offset_of(id, 3, 1), 8);
        assert_eq!(s.line_col(id, 8), (3, 1));
    }
}
