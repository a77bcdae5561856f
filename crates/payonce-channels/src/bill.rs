//! Channel bills as downloaded, and one way to read any of them: `entries` turns the stored
//! bytes (still packed as the channel sent them: WeChat's gzip, Alipay's zip, UnionPay's
//! zlib-deflated zip, the sandbox's gzip) into bill rows, checking the bill's own totals as it
//! goes. Reconciliation reads a bill twice — once to prove it whole (totals, every row
//! readable) before applying anything, once to apply — so nothing here keeps the rows.

use crate::StatementLine;
use std::io::{BufReader, Read};

/// How a stored bill's bytes are packed, and so how they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillFormat {
    /// A WeChat trade bill (`bill_type=ALL`), gzip-compressed (`tar_type=GZIP`, or compressed by
    /// payonce when downloaded plain).
    WechatGzip,
    /// Alipay's `csv.zip`: the GBK detail and summary files.
    AlipayZip,
    /// UnionPay's `fileContent`, base64-decoded: zlib-deflated bytes of a zip of fixed-width
    /// record files.
    UnionpayZlibZip,
    /// The sandbox channel's JSON statement, gzip-compressed by payonce.
    SandboxGzip,
}

impl BillFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BillFormat::WechatGzip => "wechat-gzip",
            BillFormat::AlipayZip => "alipay-zip",
            BillFormat::UnionpayZlibZip => "unionpay-zlib-zip",
            BillFormat::SandboxGzip => "sandbox-gzip",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            BillFormat::WechatGzip,
            BillFormat::AlipayZip,
            BillFormat::UnionpayZlibZip,
            BillFormat::SandboxGzip,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

/// One day's bill as the channel served it (after the channel's own integrity check).
#[derive(Debug, Clone)]
pub struct DownloadedBill {
    /// Whose bill: WeChat `mchid`, Alipay app id, UnionPay `merId`, the sandbox merchant.
    pub merchant_account: String,
    /// The channel's bill type (`ALL`, `trade`, `ZM`, …).
    pub bill_type: String,
    pub format: BillFormat,
    /// Packed as `format` says; never unpacked whole.
    pub content: Vec<u8>,
}

/// What a bill download found: the day's bill, or the channel's own signed word that it has no
/// bill for that day (WeChat `NO_STATEMENT_EXIST`, Alipay `isp.bill_not_exist`, UnionPay
/// `respCode=98`) — what a channel answers for a day on which nothing moved. Kept apart from a
/// failure: reconciliation reads it as "the channel booked nothing that day".
#[derive(Debug, Clone)]
pub enum BillDownload {
    Bill(DownloadedBill),
    NoBill { code: String },
}

/// One row of a bill: a payment or refund payonce understands, or a row it cannot classify
/// (an undocumented trade state), kept for a person rather than failing the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillEntry {
    Line(StatementLine),
    Unrecognised(String),
}

/// A bill's rows, in order; an `Err` (after which nothing follows) means the bill is not
/// whole: unreadable bytes, a malformed row, or totals that disagree with the rows.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<BillEntry, BillError>> + Send + 'a>;

/// Why a bill cannot be read, by kind; the message says where (a file, a row, a cell) in the
/// words the channel's own document uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    /// The bytes are not the container the format says (gzip, zip, zlib) or cannot be read.
    #[error("{0}")]
    Unreadable(String),
    /// Unpacking would produce more than the limit (a decompression bomb).
    #[error("unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The text is not in the bill's encoding.
    #[error("{0}")]
    Encoding(&'static str),
    /// Not this channel's bill: a header, a file of the archive or the totals part is missing
    /// or not the documented one.
    #[error("{0}")]
    Layout(String),
    /// A row (or a cell of it) that cannot be read.
    #[error("{0}")]
    Row(String),
    /// The bill's own totals cannot be read or disagree with its rows.
    #[error("{0}")]
    Totals(String),
    /// The bill is not the one the channel's hash names.
    #[error("bill hash mismatch")]
    HashMismatch,
}

/// Reads the rows of a stored bill.
pub fn entries(format: BillFormat, content: &[u8]) -> Result<Entries<'_>, BillError> {
    match format {
        BillFormat::WechatGzip => Ok(Box::new(crate::wechatpay::bill::Rows::new(
            BufReader::with_capacity(64 * 1024, flate2::read::GzDecoder::new(content)),
        ))),
        BillFormat::AlipayZip => Ok(whole(crate::alipay::bill::parse_zip(content)?)),
        BillFormat::UnionpayZlibZip => {
            Ok(whole(crate::unionpay::bill::parse_file_content(content)?))
        }
        BillFormat::SandboxGzip => Ok(whole(crate::sandbox::bill::parse(&gunzip(
            content,
            64 << 20,
        )?)?)),
    }
}

/// The rows of a bill already read whole (Alipay's and UnionPay's archives hold the day's rows
/// in one zip entry; they are read into memory, bounded by the zip readers' limits).
fn whole(s: crate::Statement) -> Entries<'static> {
    Box::new(
        s.lines.into_iter().map(|l| Ok(BillEntry::Line(l))).chain(
            s.unrecognised
                .into_iter()
                .map(|u| Ok(BillEntry::Unrecognised(u))),
        ),
    )
}

/// gzip-compresses bytes (a plain WeChat download, the sandbox statement) for storage.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes).expect("in-memory gzip");
    enc.finish().expect("in-memory gzip")
}

/// Unpacks gzip, refusing more than `limit` bytes of output (a decompression bomb, a bill far
/// larger than any day).
pub fn gunzip(bytes: &[u8], limit: u64) -> Result<Vec<u8>, BillError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| BillError::Unreadable(format!("not gzip: {e}")))?;
    if out.len() as u64 > limit {
        return Err(BillError::TooLarge { limit });
    }
    Ok(out)
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time (how WeChat and Alipay bills write times) → a
/// timestamp; `None` if it is not that.
pub fn beijing_time(s: &str) -> Option<payonce_core::Timestamp> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()?
        .assume_offset(time::macros::offset!(+8));
    Some(payonce_core::Timestamp(t.unix_timestamp() * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_and_gzip_is_bounded() {
        for f in [
            BillFormat::WechatGzip,
            BillFormat::AlipayZip,
            BillFormat::UnionpayZlibZip,
            BillFormat::SandboxGzip,
        ] {
            assert_eq!(BillFormat::parse(f.as_str()), Some(f));
        }
        let packed = gzip(&[b'x'; 10_000]);
        assert_eq!(gunzip(&packed, 10_000).unwrap().len(), 10_000);
        assert!(gunzip(&packed, 9_999).is_err());
        assert!(gunzip(b"not gzip", 100).is_err());
    }

    #[test]
    fn a_truncated_gzip_bill_ends_in_an_error() {
        let text = format!(
            "{}\n{}\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\n",
            crate::wechatpay::bill::HEADER,
            crate::wechatpay::bill::TOTALS_HEADER
        );
        let packed = gzip(text.as_bytes());
        assert_eq!(entries(BillFormat::WechatGzip, &packed).unwrap().count(), 0);
        let cut = &packed[..packed.len() - 12];
        let last = entries(BillFormat::WechatGzip, cut).unwrap().last();
        assert!(matches!(last, Some(Err(_))), "{last:?}");
    }

    #[test]
    fn bill_times_are_beijing_time() {
        assert_eq!(
            beijing_time("2021-01-28 17:07:11").unwrap().to_rfc3339(),
            "2021-01-28T09:07:11.000Z"
        );
        assert!(beijing_time("2021-01-28").is_none());
    }
}
