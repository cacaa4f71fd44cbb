//! Tesseract's TSV output → text, mean confidence and words.
//!
//! Columns: `level page_num block_num par_num line_num word_num left top width
//! height conf text`. Level 5 rows are words; the other levels (page, block,
//! paragraph, line) carry `conf = -1` and no text, and are skipped.

use crate::{OcrResult, Word};

/// A TSV the parser could not make sense of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TsvError(pub(crate) String);

const COLUMNS: usize = 12;
const WORD_LEVEL: u32 = 5;

/// Parses a whole TSV file. `want_words` keeps the per-word boxes.
pub(crate) fn parse(tsv: &str, want_words: bool) -> Result<OcrResult, TsvError> {
    let mut rows = tsv.lines().enumerate();
    match rows.next() {
        Some((_, header)) if header.starts_with("level\t") => {}
        Some((_, header)) => {
            return Err(TsvError(format!(
                "first line is not the TSV header: {:?}",
                jobmesh_wire::param::truncate(header)
            )))
        }
        None => return Err(TsvError("empty TSV output".to_owned())),
    }

    let mut lines: Vec<String> = Vec::new();
    let mut current_line: Option<[u32; 4]> = None;
    let mut words = Vec::new();
    let (mut conf_sum, mut conf_count) = (0.0f64, 0u32);

    for (index, row) in rows {
        let row = row.strip_suffix('\r').unwrap_or(row);
        if row.is_empty() {
            continue;
        }
        let line_no = index + 1;
        let mut fields = row.splitn(COLUMNS, '\t');
        let mut next = |name: &str| {
            fields
                .next()
                .ok_or_else(|| TsvError(format!("line {line_no}: missing column `{name}`")))
        };
        let level: u32 = number(next("level")?, "level", line_no)?;
        if level != WORD_LEVEL {
            continue;
        }
        let page: u32 = number(next("page_num")?, "page_num", line_no)?;
        let block: u32 = number(next("block_num")?, "block_num", line_no)?;
        let par: u32 = number(next("par_num")?, "par_num", line_no)?;
        let line: u32 = number(next("line_num")?, "line_num", line_no)?;
        let _word_num: u32 = number(next("word_num")?, "word_num", line_no)?;
        let left: u32 = number(next("left")?, "left", line_no)?;
        let top: u32 = number(next("top")?, "top", line_no)?;
        let width: u32 = number(next("width")?, "width", line_no)?;
        let height: u32 = number(next("height")?, "height", line_no)?;
        let conf: f32 = number(next("conf")?, "conf", line_no)?;
        if !conf.is_finite() {
            return Err(TsvError(format!("line {line_no}: `conf` is {conf}")));
        }
        // A word row with an empty text column may omit the trailing tab.
        let text = fields.next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }

        let key = [page, block, par, line];
        match (current_line, lines.last_mut()) {
            (Some(k), Some(last)) if k == key => {
                last.push(' ');
                last.push_str(text);
            }
            _ => {
                lines.push(text.to_owned());
                current_line = Some(key);
            }
        }
        // -1 means "no confidence": such words count for text, not the mean.
        if conf >= 0.0 {
            conf_sum += f64::from(conf);
            conf_count += 1;
        }
        if want_words {
            words.push(Word {
                text: text.to_owned(),
                confidence: conf,
                left,
                top,
                width,
                height,
            });
        }
    }

    let mean_confidence = if conf_count == 0 {
        0.0
    } else {
        (conf_sum / f64::from(conf_count)) as f32
    };
    Ok(OcrResult {
        text: lines.join("\n"),
        mean_confidence,
        words: want_words.then_some(words),
    })
}

fn number<T: std::str::FromStr>(field: &str, name: &str, line_no: usize) -> Result<T, TsvError> {
    field.trim().parse().map_err(|_| {
        TsvError(format!(
            "line {line_no}: column `{name}` is {:?}, not a number",
            jobmesh_wire::param::truncate(field)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext";

    fn tsv(rows: &[&str]) -> String {
        let mut s = HEADER.to_owned();
        for r in rows {
            s.push('\n');
            s.push_str(r);
        }
        s
    }

    #[test]
    fn words_are_joined_into_lines_and_lines_by_newline() {
        let t = tsv(&[
            "1\t1\t0\t0\t0\t0\t0\t0\t100\t50\t-1\t",
            "4\t1\t1\t1\t1\t0\t1\t1\t90\t10\t-1\t",
            "5\t1\t1\t1\t1\t1\t1\t1\t10\t10\t90\tHello",
            "5\t1\t1\t1\t1\t2\t20\t1\t10\t10\t80\tworld",
            "5\t1\t1\t1\t2\t1\t1\t20\t10\t10\t70\tagain",
            "5\t1\t2\t1\t1\t1\t1\t40\t10\t10\t-1\tthere",
        ]);
        let r = parse(&t, false).expect("parse");
        assert_eq!(r.text, "Hello world\nagain\nthere");
        assert!(
            (r.mean_confidence - 80.0).abs() < 1e-4,
            "{}",
            r.mean_confidence
        );
        assert_eq!(r.words, None);
    }

    #[test]
    fn words_keep_their_boxes_when_asked() {
        let t = tsv(&["5\t1\t1\t1\t1\t1\t40\t83\t86\t38\t96.5\tThe"]);
        let r = parse(&t, true).expect("parse");
        let words = r.words.expect("words");
        assert_eq!(words.len(), 1);
        let w = &words[0];
        assert_eq!(
            (w.text.as_str(), w.left, w.top, w.width, w.height),
            ("The", 40, 83, 86, 38)
        );
        assert!((w.confidence - 96.5).abs() < 1e-4);
    }

    #[test]
    fn blank_words_missing_trailing_newline_and_crlf_are_tolerated() {
        let t = format!(
            "{HEADER}\r\n5\t1\t1\t1\t1\t1\t1\t1\t1\t1\t50\t \r\n5\t1\t1\t1\t1\t2\t1\t1\t1\t1\t60\tok\r\n5\t1\t1\t1\t1\t3\t1\t1\t1\t1\t-1"
        );
        let r = parse(&t, true).expect("parse");
        assert_eq!(r.text, "ok");
        assert!((r.mean_confidence - 60.0).abs() < 1e-4);
        assert_eq!(r.words.map(|w| w.len()), Some(1));
    }

    #[test]
    fn no_words_gives_empty_text_and_zero_confidence() {
        let r = parse(&tsv(&["1\t1\t0\t0\t0\t0\t0\t0\t10\t10\t-1\t"]), false).expect("parse");
        assert_eq!(r.text, "");
        assert_eq!(r.mean_confidence, 0.0);
    }

    #[test]
    fn malformed_output_is_an_error_not_a_panic() {
        assert!(parse("", false).is_err());
        assert!(parse("garbage\n5\t1", false).is_err());
        let e = parse(&tsv(&["5\t1\t1\t1\t1\t1\tx\t1\t1\t1\t50\tw"]), false).expect_err("bad");
        assert!(e.0.contains("line 2: column `left`"), "{}", e.0);
        assert!(parse(&tsv(&["5\t1\t1"]), false).is_err());
        assert!(parse(&tsv(&["5\t1\t1\t1\t1\t1\t1\t1\t1\t1\tNaN\tw"]), false).is_err());
        assert!(parse(&tsv(&["5\t1\t1\t1\t1\t1\t-4\t1\t1\t1\t5\tw"]), false).is_err());
    }
}
