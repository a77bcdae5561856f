//! Bill days: the Beijing calendar day a bill covers (UnionPay's clearing day runs from 23:00
//! the day before), and yesterday's date, whose bills are ready in the morning.

use payonce_core::{ChannelName, Timestamp};

/// `[start, end)` of a Beijing calendar day, in Unix milliseconds.
pub fn beijing_day(date: &str) -> Option<(Timestamp, Timestamp)> {
    let d = time::Date::parse(
        date,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    let start = d
        .midnight()
        .assume_offset(time::macros::offset!(+8))
        .unix_timestamp()
        * 1000;
    Some((Timestamp(start), Timestamp(start + 86_400_000)))
}

/// `[start, end)` of the period a channel's bill of `date` covers: the Beijing calendar day,
/// except UnionPay's clearing day, which runs from 23:00 the day before to 23:00.
pub fn bill_window(channel: ChannelName, date: &str) -> Option<(Timestamp, Timestamp)> {
    let (start, end) = beijing_day(date)?;
    let shift = if channel == ChannelName::Unionpay {
        3_600_000
    } else {
        0
    };
    Some((Timestamp(start.0 - shift), Timestamp(end.0 - shift)))
}

/// The Beijing calendar day of `t`, `YYYY-MM-DD`.
pub fn beijing_date(t: Timestamp) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(t.0.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    t.date()
        .format(&time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// Yesterday in Beijing, the day whose bills are ready in the morning.
pub fn beijing_yesterday(now: Timestamp) -> String {
    beijing_date(Timestamp(now.0 - 86_400_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beijing_day_starts_at_16_00_utc_the_day_before() {
        let (start, end) = beijing_day("2026-11-26").unwrap();
        assert_eq!(start.to_rfc3339(), "2026-11-25T16:00:00.000Z");
        assert_eq!(end.0 - start.0, 86_400_000);
        assert_eq!(beijing_date(start), "2026-11-26");
        assert_eq!(beijing_date(Timestamp(start.0 - 1)), "2026-11-25");
        assert_eq!(beijing_yesterday(start), "2026-11-25");
        assert!(beijing_day("2026-13-01").is_none() && beijing_day("yesterday").is_none());
    }

    #[test]
    fn a_unionpay_clearing_day_runs_from_23_00_the_day_before() {
        let (start, end) = bill_window(ChannelName::Unionpay, "2026-11-26").unwrap();
        // 23:00 Beijing on the 25th is 15:00 UTC.
        assert_eq!(start.to_rfc3339(), "2026-11-25T15:00:00.000Z");
        assert_eq!(end.to_rfc3339(), "2026-11-26T15:00:00.000Z");
        assert_eq!(
            bill_window(ChannelName::Wechatpay, "2026-11-26"),
            beijing_day("2026-11-26")
        );
    }
}
