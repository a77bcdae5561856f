//! The console's pages: home (the abnormal queue, failed events, reconciliations, apps, recent
//! actions), search, an order with its timeline, and a reconciliation run.

use super::*;

// ---------------------------------------------------------------------------------------------
// Home: search, the abnormal queue, failed events, reconciliations, apps, recent actions

pub(super) struct AbnormalView {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) reference: String,
    pub(super) detail: String,
    pub(super) since: String,
    pub(super) order_id: Option<String>,
}

pub(super) struct EventView {
    pub(super) id: String,
    pub(super) kind: String,
    pub(super) status: String,
    pub(super) tries: i64,
    pub(super) last: String,
    pub(super) order_id: Option<String>,
}

pub(super) struct RunView {
    pub(super) id: String,
    pub(super) channel: String,
    pub(super) account: String,
    pub(super) bill_date: String,
    pub(super) status: String,
    pub(super) summary: String,
    pub(super) started: String,
}

pub(super) struct AppView {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) webhook: String,
    /// `wechatpay=shop-a, …`, or `defaults`.
    pub(super) accounts: String,
}

/// One channel account on the home page: public facts and its last self-check.
pub(super) struct AccountView {
    pub(super) channel: String,
    pub(super) name: String,
    pub(super) merchant_id: String,
    pub(super) source: String,
    pub(super) state: String,
    pub(super) loaded: bool,
    /// `merchant`, `provider`, `sub-merchant of sp`.
    pub(super) kind: String,
    /// When a call through it last succeeded on this instance.
    pub(super) last_success: String,
    /// `what sha256…` (the first 16 hex of each).
    pub(super) fingerprints: Vec<String>,
    pub(super) last_check: String,
}

pub(super) struct AuditView {
    pub(super) at: String,
    pub(super) operator: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) note: String,
}

#[derive(Template)]
#[template(path = "console_home.html")]
pub(super) struct HomePage<'a> {
    pub(super) operator: Option<&'a str>,
    pub(super) csrf: &'a str,
    pub(super) abnormal: Vec<AbnormalView>,
    pub(super) events: Vec<EventView>,
    pub(super) runs: Vec<RunView>,
    pub(super) apps: Vec<AppView>,
    pub(super) accounts: Vec<AccountView>,
    pub(super) audit: Vec<AuditView>,
}

pub(super) fn audit_view(e: AuditEntry) -> AuditView {
    AuditView {
        at: when(e.at),
        operator: e.operator,
        action: e.action,
        target: e.target,
        note: e.note,
    }
}

/// The order an abnormal item is about: by the order id written with the item, never by
/// searching its reference among numbers a tenant chooses (an app could name its order after
/// another app's attempt id and have that app's item, and its audit row, land on its order).
pub(super) async fn order_of(state: &AppState, order_id: Option<&str>) -> Option<Order> {
    let id = OrderId::parse(order_id?).ok()?;
    state.store.order_by_id(&id).await.ok()?
}

pub async fn home(State(state): State<AppState>, op: Operator) -> Response {
    let loaded = async {
        let mut abnormal = Vec::new();
        for a in state.store.abnormal_open().await? {
            let order_id = a.order_id.clone();
            abnormal.push(AbnormalView {
                since: when(a.created_at.0),
                id: a.id,
                kind: a.kind,
                reference: a.reference,
                detail: a.detail,
                order_id,
            });
        }
        let mut events = Vec::new();
        for status in [
            payonce_store::DeliveryStatus::Failed,
            payonce_store::DeliveryStatus::Pending,
        ] {
            for e in state.store.list_events(Some(status), 50).await? {
                let last = answer_of(e.last_status, e.last_error.as_deref()).unwrap_or_default();
                events.push(EventView {
                    id: e.id,
                    kind: e.event_type,
                    status: e.delivery_status.as_str().to_owned(),
                    tries: e.delivery_count,
                    last,
                    order_id: e.order_id,
                });
            }
        }
        let runs = state
            .store
            .reconciliations(20)
            .await?
            .into_iter()
            .map(|r| RunView {
                started: when(r.started_at),
                summary: r.reason.clone().unwrap_or_else(|| classes_of(&r.summary)),
                id: r.id,
                channel: r.channel,
                account: r.account,
                bill_date: r.bill_date,
                status: r.status,
            })
            .collect();
        let apps = state
            .store
            .apps()
            .await?
            .into_iter()
            .map(|a| AppView {
                webhook: match (&a.webhook_url, a.webhook_disabled) {
                    (Some(u), false) => u.clone(),
                    (Some(u), true) => format!("{u} (disabled)"),
                    (None, _) => "—".into(),
                },
                accounts: if a.channel_accounts.is_empty() {
                    "defaults".into()
                } else {
                    a.channel_accounts
                        .iter()
                        .map(|(c, n)| format!("{c}={n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                id: a.id.to_string(),
                name: a.name,
            })
            .collect();
        let accounts = state
            .store
            .channel_accounts()
            .await?
            .into_iter()
            .map(|a| AccountView {
                loaded: state.channels.account(a.channel, &a.name).is_some(),
                kind: match state
                    .channels
                    .account(a.channel, &a.name)
                    .map(|l| l.role.clone())
                {
                    Some(payonce_channels::AccountRole::Provider) => "provider".into(),
                    Some(payonce_channels::AccountRole::SubMerchant { provider }) => {
                        format!("sub-merchant of {provider}")
                    }
                    _ => "merchant".into(),
                },
                last_success: crate::metered::last_success(a.channel, &a.name)
                    .map_or_else(|| "—".into(), when),
                channel: a.channel.to_string(),
                merchant_id: a.merchant_id,
                source: a.source,
                state: match (a.enabled, a.is_default) {
                    (true, true) => "enabled, default".into(),
                    (true, false) => "enabled".into(),
                    (false, _) => "disabled".into(),
                },
                fingerprints: a
                    .fingerprints
                    .iter()
                    .map(|(what, fp)| format!("{what} {}…", &fp[..fp.len().min(16)]))
                    .collect(),
                last_check: match a.last_check {
                    Some((at, ok, m)) => {
                        format!(
                            "{} {}: {m}",
                            when(at.0),
                            if ok { "passed" } else { "FAILED" }
                        )
                    }
                    None => "—".into(),
                },
                name: a.name,
            })
            .collect();
        let audit = state
            .store
            .recent_audit(20)
            .await?
            .into_iter()
            .map(audit_view)
            .collect();
        Ok::<_, payonce_store::StoreError>((abnormal, events, runs, apps, accounts, audit))
    };
    match loaded.await {
        Ok((abnormal, events, runs, apps, accounts, audit)) => html(
            StatusCode::OK,
            HomePage {
                operator: Some(&op.name),
                csrf: &op.csrf,
                abnormal,
                events,
                runs,
                apps,
                accounts,
                audit,
            }
            .render(),
        ),
        Err(e) => failed(e),
    }
}

/// `{"classes":{"repaired_paid":2}}` → `repaired_paid 2`.
pub(super) fn classes_of(summary: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(summary).unwrap_or_default();
    let rows = v["rows"].as_i64().unwrap_or(0);
    let mut parts = vec![format!("{rows} rows")];
    if let Some(classes) = v["classes"].as_object() {
        parts.extend(classes.iter().map(|(k, n)| format!("{k} {n}")));
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Search and the order timeline

pub(super) struct OrderRowView {
    pub(super) id: String,
    pub(super) merchant_order_no: String,
    pub(super) app_id: String,
    pub(super) amount: String,
    pub(super) status: String,
    pub(super) created: String,
}

#[derive(Template)]
#[template(path = "console_orders.html")]
pub(super) struct OrdersPage<'a> {
    pub(super) operator: Option<&'a str>,
    pub(super) csrf: &'a str,
    pub(super) q: &'a str,
    pub(super) orders: Vec<OrderRowView>,
}

pub async fn search(
    State(state): State<AppState>,
    op: Operator,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let q = params.get("q").map(|s| s.trim()).unwrap_or("");
    let orders = if q.is_empty() || q.len() > 128 {
        Ok(Vec::new())
    } else {
        state.store.find_orders(q, 50).await
    };
    match orders {
        Ok(orders) => {
            let orders = orders
                .into_iter()
                .map(|o| OrderRowView {
                    amount: yuan(o.amount.minor),
                    status: o.status.as_str().to_owned(),
                    created: when(o.created_at.0),
                    id: o.id.to_string(),
                    merchant_order_no: o.merchant_order_no,
                    app_id: o.app_id.to_string(),
                })
                .collect();
            html(
                StatusCode::OK,
                OrdersPage {
                    operator: Some(&op.name),
                    csrf: &op.csrf,
                    q,
                    orders,
                }
                .render(),
            )
        }
        Err(e) => failed(e),
    }
}

#[derive(Template)]
#[template(path = "console_order.html")]
pub(super) struct OrderPage<'a> {
    pub(super) operator: Option<&'a str>,
    pub(super) csrf: &'a str,
    pub(super) order: OrderRowView,
    pub(super) subject: String,
    pub(super) entries: Vec<Entry>,
    pub(super) abnormal: Vec<AbnormalView>,
    pub(super) failed_events: Vec<EventView>,
}

pub async fn order(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let Ok(order_id) = OrderId::parse(&id) else {
        return refused(StatusCode::NOT_FOUND, "No such order.");
    };
    match timeline(&state, &order_id).await {
        Ok(Some((order, entries, abnormal, failed_events))) => html(
            StatusCode::OK,
            OrderPage {
                operator: Some(&op.name),
                csrf: &op.csrf,
                subject: order.subject.clone(),
                order: OrderRowView {
                    amount: yuan(order.amount.minor),
                    status: order.status.as_str().to_owned(),
                    created: when(order.created_at.0),
                    id: order.id.to_string(),
                    merchant_order_no: order.merchant_order_no,
                    app_id: order.app_id.to_string(),
                },
                entries,
                abnormal,
                failed_events,
            }
            .render(),
        ),
        Ok(None) => refused(StatusCode::NOT_FOUND, "No such order."),
        Err(e) => failed(e),
    }
}
// ---------------------------------------------------------------------------------------------
// Reconciliation runs

pub(super) struct ItemView {
    pub(super) class: String,
    pub(super) reference: String,
    pub(super) order_id: Option<String>,
    pub(super) amounts: String,
    pub(super) detail: String,
}

#[derive(Template)]
#[template(path = "console_reconciliation.html")]
pub(super) struct ReconciliationPage<'a> {
    pub(super) operator: Option<&'a str>,
    pub(super) csrf: &'a str,
    pub(super) run: RunView,
    pub(super) reason: String,
    pub(super) items: Vec<ItemView>,
}

pub async fn reconciliation(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let run = match state.store.reconciliation(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return refused(StatusCode::NOT_FOUND, "No such reconciliation run."),
        Err(e) => return failed(e),
    };
    let items = match state.store.reconciliation_items(&id, None, None, 500).await {
        Ok(items) => items,
        Err(e) => return failed(e),
    };
    let items = items
        .into_iter()
        .map(|i| ItemView {
            amounts: match (i.local_amount, i.channel_amount) {
                (Some(l), Some(c)) => format!("here {} / channel {}", yuan(l), yuan(c)),
                (Some(l), None) => format!("here {}", yuan(l)),
                (None, Some(c)) => format!("channel {}", yuan(c)),
                (None, None) => String::new(),
            },
            class: i.class,
            reference: i.reference,
            order_id: i.order_id,
            detail: i.detail,
        })
        .collect();
    let view = RunView {
        started: when(run.started_at),
        summary: classes_of(&run.summary),
        id: run.id,
        channel: run.channel,
        account: run.account,
        bill_date: run.bill_date,
        status: run.status,
    };
    html(
        StatusCode::OK,
        ReconciliationPage {
            operator: Some(&op.name),
            csrf: &op.csrf,
            run: view,
            reason: run.reason.unwrap_or_default(),
            items,
        }
        .render(),
    )
}
