//! Reconciliation's vocabulary: the classes of difference a run between a channel's bill and
//! payonce's records can find (what each means and does: `payonce_server::engine::reconcile`).

/// Every class, in the order reports list them.
pub const CLASSES: [&str; 6] = [
    "repaired_paid",
    "repaired_refund",
    "missing_at_channel",
    "amount_mismatch",
    "unknown_trade",
    "unknown_refund",
];
