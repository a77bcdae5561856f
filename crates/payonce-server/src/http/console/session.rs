//! Console sessions: the operator behind a request (cookie → session → operator), CSRF on
//! every POST, signing in and out, and the list of open sessions an operator can end.

use super::*;

pub(super) const COOKIE: &str = "payonce_console";

// ---------------------------------------------------------------------------------------------
// Sessions

/// A signed-in operator (from the session cookie).
pub struct Operator {
    pub name: String,
    pub(super) csrf: String,
    pub(super) id_hash: String,
}

/// What a request without a valid session gets: a page asks to sign in, an action is refused.
pub enum NotSignedIn {
    Page,
    Action,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Page => see_other("/console/sign-in"),
            NotSignedIn::Action => refused(
                StatusCode::UNAUTHORIZED,
                "Not signed in (or the session ended). Sign in again.",
            ),
        }
    }
}

pub(super) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty() && v.len() <= 64).then(|| v.to_owned())
        })
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NotSignedIn> {
        let reject = if parts.method == axum::http::Method::GET {
            NotSignedIn::Page
        } else {
            NotSignedIn::Action
        };
        let Some(id) = session_id(&parts.headers) else {
            return Err(reject);
        };
        let id_hash = sha256_hex(id.as_bytes());
        match state
            .store
            .session(&id_hash, &token_generation(state), state.clock.now())
            .await
        {
            Ok(Some(s)) => Ok(Operator {
                name: s.operator,
                csrf: s.csrf_token,
                id_hash,
            }),
            _ => Err(reject),
        }
    }
}

/// The admin token's generation: a short hash that tells tokens apart without standing for
/// one (16 hex digits; the stored app secrets' full hashes are no weaker). A session is bound to
/// the generation it was opened under, so changing the token ends every session.
pub fn token_generation(state: &AppState) -> String {
    match state.config.admin_token.as_deref() {
        Some(t) => sha256_hex(format!("payonce console session generation\0{t}").as_bytes())[..16]
            .to_owned(),
        // No admin token, no console: a generation no session was opened with.
        None => "closed".into(),
    }
}

/// A POST is the signed-in operator's own only with the session's CSRF token, and (when the
/// browser says where the form came from) from this host.
pub(super) fn check_post(
    op: &Operator,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), Response> {
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    if sha256_hex(given.as_bytes()) != sha256_hex(op.csrf.as_bytes()) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "This form is stale or did not come from the console (CSRF token missing or wrong).",
        ));
    }
    // `Origin: null` (an opaque origin: privacy settings, sandboxed frames) says nothing; the
    // token and the SameSite=Strict cookie decide then.
    if let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
    {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin_host != host {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "This form was posted from another site.",
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sign in / out

#[derive(Template)]
#[template(path = "console_sign_in.html")]
pub(super) struct SignInPage<'a> {
    pub(super) operator: Option<&'a str>,
    pub(super) csrf: &'a str,
    pub(super) error: Option<&'a str>,
}

pub async fn sign_in_page() -> Response {
    html(
        StatusCode::OK,
        SignInPage {
            operator: None,
            csrf: "",
            error: None,
        }
        .render(),
    )
}

pub async fn sign_in(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let name = form.get("operator").map(|s| s.trim()).unwrap_or("");
    let expected = state.config.admin_token.as_deref();
    // The address's admin-token budget first: while it is spent, every sign-in from there is
    // refused, the right token too (a guesser learns nothing more until the window passes).
    let ip = crate::gateway::auth::client_ip(&state, &headers, peer.map(|p| p.0.0));
    let token_ok = match crate::gateway::auth::check_secret(&state, Surface::Admin, ip, || {
        expected.is_some_and(|e| sha256_hex(e.as_bytes()) == sha256_hex(token.as_bytes()))
    }) {
        Ok(()) => true,
        Err(crate::gateway::auth::SecretRefused::OverBudget(wait)) => {
            let mut resp = refused(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins from your address; wait and try again.",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, (wait.as_secs() + 1).into());
            return resp;
        }
        Err(crate::gateway::auth::SecretRefused::Wrong) => false,
    };
    let name_ok = (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control);
    if !token_ok || !name_ok {
        let error = if !token_ok {
            "That is not the admin token."
        } else {
            "Give your name (1–64 characters): it signs what you do here."
        };
        return html(
            StatusCode::UNAUTHORIZED,
            SignInPage {
                operator: None,
                csrf: "",
                error: Some(error),
            }
            .render(),
        );
    }
    let id = random_token();
    let now = state.clock.now();
    let session = ConsoleSession {
        id_hash: sha256_hex(id.as_bytes()),
        operator: name.to_owned(),
        csrf_token: random_token(),
        expires_at: (now + state.config.console_session_ttl).0,
        created_at: now.0,
        token_generation: token_generation(&state),
    };
    if let Err(e) = state.store.create_session(&session).await {
        return failed(e);
    }
    let op = Operator {
        name: name.to_owned(),
        csrf: session.csrf_token,
        id_hash: session.id_hash,
    };
    audit(&state, &op, "sign_in", "console", None, "").await;
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        state.config.console_session_ttl.as_secs()
    );
    let mut resp = see_other("/console");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of safe characters"),
    );
    resp
}

pub async fn sign_out(
    State(state): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_post(&op, &headers, &form) {
        return r;
    }
    let _ = state.store.delete_session(&op.id_hash).await;
    let mut resp = see_other("/console/sign-in");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "payonce_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}

pub(super) struct SessionView {
    pub(super) id_hash: String,
    pub(super) operator: String,
    pub(super) since: String,
    pub(super) until: String,
    pub(super) yours: bool,
}

#[derive(Template)]
#[template(path = "console_sessions.html")]
pub(super) struct SessionsPage<'a> {
    pub(super) operator: Option<&'a str>,
    pub(super) csrf: &'a str,
    pub(super) sessions: Vec<SessionView>,
}

/// `GET /console/sessions`: who is signed in (this admin token's sessions), each with a button
/// that ends it.
pub async fn sessions(State(state): State<AppState>, op: Operator) -> Response {
    match state
        .store
        .sessions(&token_generation(&state), state.clock.now())
        .await
    {
        Ok(list) => {
            let sessions = list
                .into_iter()
                .map(|s| SessionView {
                    yours: s.id_hash == op.id_hash,
                    id_hash: s.id_hash,
                    operator: s.operator,
                    since: when(s.created_at),
                    until: when(s.expires_at),
                })
                .collect();
            html(
                StatusCode::OK,
                SessionsPage {
                    operator: Some(&op.name),
                    csrf: &op.csrf,
                    sessions,
                }
                .render(),
            )
        }
        Err(e) => failed(e),
    }
}

/// `POST /console/sessions/{id_hash}/end`: ends a session (another operator's left signed in on
/// a lost laptop, say). Audited.
pub async fn end_session(
    State(state): State<AppState>,
    op: Operator,
    headers: HeaderMap,
    Path(id_hash): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_post(&op, &headers, &form) {
        return r;
    }
    if let Err(e) = state.store.delete_session(&id_hash).await {
        return failed(e);
    }
    audit(
        &state,
        &op,
        "end_session",
        &id_hash[..id_hash.len().min(12)],
        None,
        "",
    )
    .await;
    if id_hash == op.id_hash {
        let mut resp = see_other("/console/sign-in");
        resp.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "payonce_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        );
        return resp;
    }
    see_other("/console/sessions")
}
