//! The attempt (one channel order) state machine (DESIGN.md, "Attempt").

use crate::{
    AttemptId, ChannelName, IllegalTransition, Money, OrderId, OutTradeNo, PayMethod, Timestamp,
};
use serde::{Deserialize, Serialize};

/// One channel order made for a payment order.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: AttemptId,
    pub order_id: OrderId,
    pub channel: ChannelName,
    /// The channel account (merchant number) the channel order was made through: every later
    /// call about it goes to the same account.
    pub account: String,
    pub method: PayMethod,
    pub out_trade_no: OutTradeNo,
    pub amount: Money,
    pub status: AttemptStatus,
    pub is_duplicate: bool,
    /// The channel's payment credential as JSON text (QR url, prepay id, form…).
    pub credential: Option<String>,
    pub credential_expires_at: Option<Timestamp>,
    /// The latest moment the channel could still take a payment on this channel order.
    pub payable_until: Option<Timestamp>,
    /// The prepay request as first sent (JSON, written with the intent): a credential refresh
    /// re-sends exactly it.
    pub prepay_request: Option<String>,
    pub channel_trade_no: Option<String>,
    /// Opaque connector data needed to query the channel order later.
    pub channel_data: Option<String>,
    pub paid_at: Option<Timestamp>,
    pub next_query_at: Option<Timestamp>,
    /// How many times the workers have checked it.
    pub query_count: i64,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Intent committed; the channel call may or may not have happened yet.
    Created,
    /// The channel accepted; the credential (QR code, prepay id) is stored.
    Pending,
    Succeeded,
    Failed,
    Closed,
    /// The call's outcome is not known (timeout, lost answer, crash): only a query settles it.
    Unknown,
}

impl AttemptStatus {
    /// Every status (the API document lists them from here).
    pub const ALL: [AttemptStatus; 6] = [
        AttemptStatus::Created,
        AttemptStatus::Pending,
        AttemptStatus::Succeeded,
        AttemptStatus::Failed,
        AttemptStatus::Closed,
        AttemptStatus::Unknown,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptStatus::Created => "created",
            AttemptStatus::Pending => "pending",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Closed => "closed",
            AttemptStatus::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => AttemptStatus::Created,
            "pending" => AttemptStatus::Pending,
            "succeeded" => AttemptStatus::Succeeded,
            "failed" => AttemptStatus::Failed,
            "closed" => AttemptStatus::Closed,
            "unknown" => AttemptStatus::Unknown,
            _ => return None,
        })
    }

    /// At most one attempt per order is active; the database enforces it with a partial
    /// unique index over exactly these statuses.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            AttemptStatus::Created | AttemptStatus::Pending | AttemptStatus::Unknown
        )
    }

    /// SQL list of the active statuses, for that index and for queries.
    pub const ACTIVE_SQL: &'static str = "('created','pending','unknown')";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEvent {
    /// The channel accepted the prepay and returned a credential.
    Accepted,
    /// The channel refused the prepay definitively (bad parameters, merchant not allowed…).
    Refused,
    /// A call's outcome is unknown: timeout, connection cut, process died mid-call.
    Ambiguous,
    /// A query found the channel order, unpaid.
    ReportedUnpaid,
    /// A notification, query, close answer or statement says the payer paid.
    ReportedPaid,
    /// The channel confirms the order closed (close answer, or query says closed).
    ReportedClosed,
    /// A query finds no such channel order after the call timeout. Callers only send it
    /// for channels that create their order at prepay.
    ReportedAbsent,
    /// The channel re-issued the credential of a pending channel order (same out_trade_no,
    /// identical request): a WeChat code_url / prepay_id or an Alipay QR past its life.
    CredentialRefreshed,
    /// A credential refresh was refused or timed out. The channel order itself is unchanged
    /// (it was pending and stays so): never `unknown`, never `failed`.
    RefreshFailed,
}

impl AttemptEvent {
    fn name(&self) -> &'static str {
        match self {
            AttemptEvent::Accepted => "accepted",
            AttemptEvent::Refused => "refused",
            AttemptEvent::Ambiguous => "ambiguous",
            AttemptEvent::ReportedUnpaid => "reported_unpaid",
            AttemptEvent::ReportedPaid => "reported_paid",
            AttemptEvent::ReportedClosed => "reported_closed",
            AttemptEvent::ReportedAbsent => "reported_absent",
            AttemptEvent::CredentialRefreshed => "credential_refreshed",
            AttemptEvent::RefreshFailed => "refresh_failed",
        }
    }
}

impl AttemptStatus {
    /// The one transition function for attempts. `Ok(self)` means "nothing to change".
    pub fn next(self, event: AttemptEvent) -> Result<AttemptStatus, IllegalTransition> {
        use AttemptEvent as E;
        use AttemptStatus::*;
        match (self, event) {
            // A payment is a fact: whatever we believed, the attempt succeeded.
            (_, E::ReportedPaid) => Ok(Succeeded),
            (Succeeded, _) => Ok(Succeeded),
            (Created, E::Accepted) => Ok(Pending),
            (Created, E::Refused) => Ok(Failed),
            (Created | Pending, E::Ambiguous) => Ok(Unknown),
            (Unknown, E::Ambiguous) => Ok(Unknown),
            (Unknown | Created, E::ReportedUnpaid) => Ok(Pending),
            (Pending, E::ReportedUnpaid) => Ok(Pending),
            (Created | Pending | Unknown, E::ReportedClosed) => Ok(Closed),
            (Closed, E::ReportedClosed | E::ReportedUnpaid) => Ok(Closed),
            (Created | Unknown, E::ReportedAbsent) => Ok(Failed),
            (Failed, E::ReportedAbsent | E::Refused) => Ok(Failed),
            // Only a pending channel order's credential is refreshed; whatever the refresh's
            // fate, the order at the channel is what it was.
            (Pending, E::CredentialRefreshed | E::RefreshFailed) => Ok(Pending),
            _ => Err(IllegalTransition {
                from: self.as_str(),
                event: event.name(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeded_is_final() {
        for e in [
            AttemptEvent::Accepted,
            AttemptEvent::Refused,
            AttemptEvent::Ambiguous,
            AttemptEvent::ReportedUnpaid,
            AttemptEvent::ReportedClosed,
            AttemptEvent::ReportedAbsent,
            AttemptEvent::CredentialRefreshed,
            AttemptEvent::RefreshFailed,
        ] {
            assert_eq!(
                AttemptStatus::Succeeded.next(e),
                Ok(AttemptStatus::Succeeded)
            );
        }
    }

    #[test]
    fn a_refresh_never_leaves_pending() {
        assert_eq!(
            AttemptStatus::Pending.next(AttemptEvent::CredentialRefreshed),
            Ok(AttemptStatus::Pending)
        );
        assert_eq!(
            AttemptStatus::Pending.next(AttemptEvent::RefreshFailed),
            Ok(AttemptStatus::Pending)
        );
        for s in [
            AttemptStatus::Created,
            AttemptStatus::Unknown,
            AttemptStatus::Closed,
            AttemptStatus::Failed,
        ] {
            assert!(s.next(AttemptEvent::CredentialRefreshed).is_err(), "{s:?}");
        }
    }

    #[test]
    fn a_timeout_is_never_a_failure() {
        assert_eq!(
            AttemptStatus::Created.next(AttemptEvent::Ambiguous),
            Ok(AttemptStatus::Unknown)
        );
        assert!(AttemptStatus::Pending.next(AttemptEvent::Refused).is_err());
    }

    #[test]
    fn a_closed_attempt_can_still_be_paid() {
        assert_eq!(
            AttemptStatus::Closed.next(AttemptEvent::ReportedPaid),
            Ok(AttemptStatus::Succeeded)
        );
        assert_eq!(
            AttemptStatus::Failed.next(AttemptEvent::ReportedPaid),
            Ok(AttemptStatus::Succeeded)
        );
    }
}
