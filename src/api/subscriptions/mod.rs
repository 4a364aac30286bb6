//! `/v1/subscriptions` handlers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::audit::{self, RequestMeta};
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::pagination::{page_limit, Page};
use super::{ApiJson, ApiPath, ApiQuery, AppState};
use crate::events::filter::Filter;
use crate::subscriptions::credentials::{self, EndpointAuth};
use crate::subscriptions::live::LiveSubscription;
use crate::subscriptions::store::{IdempotencyKey, Rejection};
use crate::subscriptions::{json_value, raw_json, RateLimit, Secret, Status, Subscription};

pub mod attempts;
pub mod secret;
pub mod stats;
pub mod test;

const MAX_EVENT_TYPES: usize = 64;
const MAX_DESCRIPTION: usize = 1024;
const MAX_METADATA_BYTES: usize = 4096;

/// A subscription as the API shows it: everything but the secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub owner: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Custom request headers, values redacted (`"Bearer ****abcd"`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Endpoint authentication, `client_secret` redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub auth: Option<Value>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<chrono::DateTime<Utc>>,
    /// `open` while the circuit breaker holds deliveries back, else `closed`.
    pub circuit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_open_until: Option<chrono::DateTime<Utc>>,
    /// First failure since the last success (set while failing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<chrono::DateTime<Utc>>,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
    /// Only in the answer to the create call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The version (also the `ETag`); send it as `If-Match` to change only
    /// this version.
    pub version: i64,
}

impl From<&Subscription> for SubscriptionView {
    fn from(s: &Subscription) -> Self {
        SubscriptionView {
            id: s.id.clone(),
            owner: s.owner.clone(),
            url: s.url.clone(),
            event_types: s.event_types.clone(),
            description: s.description.clone(),
            filter: s.filter.as_ref().map(json_value),
            rate_limit: s.rate_limit.clone(),
            metadata: s.metadata.as_ref().map(json_value),
            headers: credentials::redacted_headers(&s.headers),
            auth: s.auth.as_deref().map(EndpointAuth::redacted),
            status: s.status,
            disabled_reason: s.disabled_reason.clone(),
            disabled_at: s.disabled_at,
            circuit: if s.circuit_open_until.is_some() {
                "open"
            } else {
                "closed"
            }
            .to_string(),
            circuit_open_until: s.circuit_open_until,
            failing_since: s.failing_since,
            created_at: s.created_at,
            updated_at: s.updated_at,
            secret: None,
            version: -1,
        }
    }
}

impl From<&LiveSubscription> for SubscriptionView {
    fn from(live: &LiveSubscription) -> Self {
        SubscriptionView {
            version: live.version,
            ..SubscriptionView::from(&live.sub)
        }
    }
}

/// The `ETag` of a version.
fn etag(version: i64) -> [(header::HeaderName, String); 1] {
    [(header::ETAG, format!("\"{version}\""))]
}

/// The version an `If-Match` header pins, if any.
pub(in crate::api) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("If-Match must be an ETag from GET, like \"42\""))
}

/// The API's answer to a write that did not apply.
pub(in crate::api) fn rejected(rejection: Rejection, pinned: bool) -> ApiError {
    match rejection {
        Rejection::Stale { current } if pinned => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_conflict",
            format!("the subscription changed: its version is now {current}; GET it and try again"),
        ),
        Rejection::Stale { .. } | Rejection::Exists => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "another change to this subscription won; GET it and try again",
        ),
        Rejection::Gone => ApiError::not_found("subscription"),
        Rejection::CapReached { cap } => ApiError::new(
            StatusCode::CONFLICT,
            "limit_reached",
            format!("the owner already has {cap} subscriptions (api.max_subscriptions_per_owner)"),
        ),
        Rejection::Duplicate { .. } => super::idempotency::reused(),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// `https` endpoint (http only where the operator allows it).
    url: String,
    /// Exact types or dot-segment wildcards (`tier.*`, `*`).
    event_types: Vec<String>,
    description: Option<String>,
    /// Dotted path to condition over the outbound body, e.g.
    /// `{"data.new_tier":{"$in":["gold","platinum"]}}`.
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    rate_limit: Option<RateLimit>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Admin only: the owner to create the subscription for.
    owner: Option<String>,
    /// Up to 10 custom request headers sent on every attempt (values up to
    /// 1 KiB), e.g. `{"Authorization":"Bearer …"}`. Encrypted at rest and
    /// shown redacted. `webhook-*`, `content-type`, `content-length`,
    /// `host` and hop-by-hop headers are refused.
    #[schema(value_type = Option<Object>)]
    headers: Option<BTreeMap<String, String>>,
    /// `{"type":"oauth2_client_credentials", token_url, client_id,
    /// client_secret, scope?}`: a token from `token_url` is sent as
    /// `Authorization: Bearer`. The client secret is encrypted at rest and
    /// shown redacted.
    #[schema(value_type = Option<Object>)]
    auth: Option<EndpointAuth>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscription {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    /// An empty object removes the filter.
    #[schema(value_type = Option<Object>)]
    filter: Option<Value>,
    rate_limit: Option<RateLimit>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// `active` or `paused` (a paused subscription's deliveries are held until it is active again).
    status: Option<Status>,
    /// Replaces all custom headers; `null` or `{}` removes them. A value
    /// equal to what GET shows for that header (redacted) keeps it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    headers: Option<Option<BTreeMap<String, String>>>,
    /// Replaces the endpoint authentication; `null` removes it. A
    /// `client_secret` equal to what GET shows keeps the stored one.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    auth: Option<Option<EndpointAuth>>,
}

/// A field that may be absent (unchanged), `null` (removed) or a value.
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 250, default 50.
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Checks a URL and returns it in the normalized form the sender uses (no
/// raw tabs, spaces or backslashes kept as typed; hosts percent-decoded and
/// lower-cased), which is what is stored and shown.
async fn check_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    if url.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(
            "invalid_url",
            "url must not contain control characters (tabs, newlines, NUL)",
        ));
    }
    crate::net::check_url(url, &state.shared.settings.security.destination_policy())
        .await
        .map(|parsed| parsed.to_string())
        .map_err(|e| ApiError::invalid("invalid_url", e.to_string()))
}

/// Checks custom headers and endpoint auth together (an `Authorization`
/// header and `auth` exclude each other); the token URL passes the same
/// destination checks as endpoint URLs and is stored normalized.
async fn check_credentials(
    state: &AppState,
    headers: Option<&BTreeMap<String, String>>,
    auth: Option<&mut EndpointAuth>,
) -> Result<(), ApiError> {
    if let Some(headers) = headers {
        credentials::check_headers(headers, auth.is_some())
            .map_err(|e| ApiError::invalid("invalid_headers", e.to_string()))?;
    }
    if let Some(auth) = auth {
        credentials::check_auth(auth)
            .map_err(|e| ApiError::invalid("invalid_auth", e.to_string()))?;
        let EndpointAuth::Oauth2ClientCredentials { token_url, .. } = auth;
        if token_url.chars().any(|c| c.is_control()) {
            return Err(ApiError::invalid(
                "invalid_auth",
                "auth.token_url must not contain control characters",
            ));
        }
        *token_url = crate::net::check_url(
            token_url,
            &state.shared.settings.security.destination_policy(),
        )
        .await
        .map(|parsed| parsed.to_string())
        .map_err(|e| ApiError::invalid("invalid_auth", format!("auth.token_url: {e}")))?;
    }
    Ok(())
}

fn check_event_types(state: &AppState, types: &[String]) -> Result<(), ApiError> {
    if types.is_empty() || types.len() > MAX_EVENT_TYPES {
        return Err(ApiError::invalid(
            "invalid_event_types",
            format!("event_types must list 1 to {MAX_EVENT_TYPES} types"),
        ));
    }
    if let Some(unknown) = types.iter().find(|t| !state.shared.catalog.matches_any(t)) {
        let known: Vec<&str> = state
            .shared
            .catalog
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        return Err(ApiError::invalid(
            "invalid_event_types",
            format!(
                "event type {unknown:?} matches nothing in the catalog ({})",
                known.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The owner's rules (from the owners topic): event types within its
/// scope (422 `outside_scope`), a rate at most its `max_rate_per_second`
/// (422 `invalid_rate_limit`).
fn check_owner_rules(
    state: &AppState,
    owner: &str,
    event_types: Option<&[String]>,
    rate_limit: Option<&RateLimit>,
) -> Result<(), ApiError> {
    let Some(live) = state.shared.owners.get(owner) else {
        return Ok(());
    };
    let owner = &live.owner;
    if let (Some(scope), Some(types)) = (&owner.scope, event_types) {
        let known = || state.shared.catalog.iter().map(|t| t.name.as_str());
        if let Some(outside) = types
            .iter()
            .find(|t| !crate::owners::within_scope(scope, t, known()))
        {
            return Err(ApiError::invalid(
                "outside_scope",
                format!(
                    "event type {outside:?} is outside owner {}'s scope ({})",
                    owner.id,
                    scope.event_types.join(", ")
                ),
            ));
        }
    }
    if let (Some(max), Some(rl)) = (owner.max_rate_per_second, rate_limit) {
        if rl.per_second > max {
            return Err(ApiError::invalid(
                "invalid_rate_limit",
                format!(
                    "rate_limit.per_second {} is above owner {}'s max_rate_per_second {max}",
                    rl.per_second, owner.id
                ),
            ));
        }
    }
    Ok(())
}

fn check_fields(
    description: Option<&String>,
    filter: Option<&Value>,
    rate_limit: Option<&RateLimit>,
    metadata: Option<&Value>,
) -> Result<(), ApiError> {
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(ApiError::invalid(
            "invalid_description",
            format!("description is longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    if let Some(filter) = filter {
        Filter::compile(filter).map_err(|e| ApiError::invalid("invalid_filter", e.to_string()))?;
    }
    if let Some(rl) = rate_limit {
        if !(1..=100_000).contains(&rl.per_second) || !(1..=100_000).contains(&rl.burst) {
            return Err(ApiError::invalid(
                "invalid_rate_limit",
                "rate_limit.per_second and rate_limit.burst must be between 1 and 100000",
            ));
        }
    }
    if let Some(metadata) = metadata {
        if !metadata.is_object() {
            return Err(ApiError::invalid(
                "invalid_metadata",
                "metadata must be an object",
            ));
        }
        if serde_json::to_vec(metadata).map_or(0, |v| v.len()) > MAX_METADATA_BYTES {
            return Err(ApiError::invalid(
                "invalid_metadata",
                format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// The subscription, if the caller may see it; another owner's is 404.
pub(in crate::api) async fn find(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Subscription, ApiError> {
    find_live(state, caller, id)
        .await
        .map(|live| live.sub.clone())
}

/// The subscription, when this instance can also sign for it (it has the
/// secrets key its secret is sealed with); 503 otherwise.
pub(in crate::api) async fn find_usable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Subscription, ApiError> {
    let live = find_live(state, caller, id).await?;
    if let Some(kid) = &live.unknown_key {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("this instance does not have secrets key {kid} yet; try again during the key rollout or through another instance"),
        ));
    }
    Ok(live.sub.clone())
}

/// The same, with its version.
///
/// An id this instance does not know is looked up again after its view has
/// read the subscriptions topic to its end (the read fence), so a
/// subscription created through another instance is found here as soon as
/// its create answered 201.
pub(in crate::api) async fn find_live(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Arc<LiveSubscription>, ApiError> {
    let store = &state.shared.store;
    let live = match store.get(id) {
        Some(live) => Some(live),
        None => {
            store.fence().await;
            store.get(id)
        }
    };
    live.filter(|live| caller.may_see(&live.sub.owner))
        .ok_or_else(|| ApiError::not_found("subscription"))
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created; the only answer that carries the secret", body = SubscriptionView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 409, description = "Owner's subscription limit reached", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Invalid url, event_types, filter, rate_limit, description, metadata or owner", body = ErrorBody),
        (status = 503, description = "Subscription store unavailable", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency = idempotency_key(&headers, &body)?;
    let owner = match (&caller, body.owner) {
        (Caller::Owner(o), None) => o.clone(),
        (Caller::Owner(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_owner",
                "only the admin token may set owner",
            ))
        }
        (Caller::Admin, Some(o)) if !o.trim().is_empty() => o,
        (Caller::Admin, _) => "admin".to_string(),
    };
    let owner_record = state.shared.owners.get(&owner);
    let cap =
        super::owners::max_subscriptions(&state.shared, owner_record.as_ref().map(|o| &o.owner));
    if state.shared.store.count_owned(&owner) >= cap {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "limit_reached",
            format!(
                "owner {owner} already has {cap} subscriptions (its max_subscriptions or api.max_subscriptions_per_owner)"
            ),
        ));
    }
    let url = check_url(&state, &body.url).await?;
    check_event_types(&state, &body.event_types)?;
    check_fields(
        body.description.as_ref(),
        body.filter.as_ref(),
        body.rate_limit.as_ref(),
        body.metadata.as_ref(),
    )?;
    check_owner_rules(
        &state,
        &owner,
        Some(&body.event_types),
        body.rate_limit.as_ref(),
    )?;
    let mut auth = body.auth.clone();
    check_credentials(&state, body.headers.as_ref(), auth.as_mut()).await?;
    // An owner's max_rate_per_second is also the rate of subscriptions
    // that set none.
    let default_rate = owner_record
        .and_then(|o| o.owner.max_rate_per_second)
        .map(|r| RateLimit {
            per_second: r,
            burst: r,
        });
    let mut sub = Subscription::new(owner, url, body.event_types);
    sub.headers = body
        .headers
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| (name, Secret::from_string(value)))
        .collect();
    sub.auth = auth.map(Box::new);
    sub.description = body.description;
    sub.filter = body.filter.as_ref().map(raw_json);
    sub.rate_limit = body.rate_limit.or(default_rate);
    sub.metadata = body.metadata.as_ref().map(raw_json);
    sub.idempotency = idempotency.map(Box::new);
    let created = state
        .shared
        .store
        .create(&sub)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    let live = match created {
        Ok(live) => {
            tracing::info!(subscription_id = %sub.id, owner = %sub.owner, "Subscription created.");
            audit::record(
                &state.shared,
                &caller,
                &meta,
                "subscription.create",
                &sub.id,
                Some(&sub.owner),
            )
            .await;
            live
        }
        // The same create again: the first answer again, nothing new.
        Err(Rejection::Duplicate {
            id,
            same_body: true,
        }) => state
            .shared
            .store
            .get(&id)
            .ok_or_else(|| ApiError::not_found("subscription"))?,
        Err(rejection) => return Err(rejected(rejection, false)),
    };
    let mut view = SubscriptionView::from(live.as_ref());
    view.secret = Some(live.sub.secret.expose().to_string());
    Ok((StatusCode::CREATED, etag(live.version), Json(view)))
}

/// An auth setting from a PATCH: a `client_secret` equal to the redacted
/// form of the stored one keeps the stored one.
fn keep_redacted_secret(mut asked: EndpointAuth, current: Option<&EndpointAuth>) -> EndpointAuth {
    let EndpointAuth::Oauth2ClientCredentials { client_secret, .. } = &mut asked;
    if let Some(EndpointAuth::Oauth2ClientCredentials {
        client_secret: stored,
        ..
    }) = current
    {
        if credentials::redact(stored.expose()) == client_secret.expose() {
            *client_secret = stored.clone();
        }
    }
    asked
}

/// The `Idempotency-Key` of a create, with a hash of what it asks for.
fn idempotency_key(
    headers: &HeaderMap,
    body: &CreateSubscription,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut canonical = serde_json::json!({
        "url": body.url,
        "event_types": body.event_types,
        "description": body.description,
        "filter": body.filter,
        "rate_limit": body.rate_limit,
        "metadata": body.metadata,
        "owner": body.owner,
    });
    // Only when given, so keys used before these fields existed hash alike.
    if let Some(headers) = &body.headers {
        canonical["headers"] = serde_json::json!(headers);
    }
    if let Some(auth) = &body.auth {
        canonical["auth"] = serde_json::json!(auth);
    }
    Ok(
        super::idempotency::key_and_hash(headers, &canonical)?.map(|(key, body_hash)| {
            IdempotencyKey {
                key,
                body_hash,
                at_ms: Utc::now().timestamp_millis(),
            }
        }),
    )
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    params(ListQuery),
    responses(
        (status = 200, body = Page<SubscriptionView>),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<SubscriptionView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let (items, more) = state
        .shared
        .store
        .list(caller.owner_scope(), q.cursor.as_deref(), limit);
    let next_cursor = more
        .then(|| items.last().map(|l| l.sub.id.clone()))
        .flatten();
    Ok(Json(Page {
        data: items
            .iter()
            .map(|l| SubscriptionView::from(&l.sub))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SubscriptionView),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such subscription, or another owner's", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let live = find_live(&state, &caller, &id).await?;
    Ok((
        etag(live.version),
        Json(SubscriptionView::from(live.as_ref())),
    ))
}

#[utoipa::path(patch, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    request_body = UpdateSubscription,
    responses(
        (status = 200, body = SubscriptionView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateSubscription>,
) -> Result<impl IntoResponse, ApiError> {
    let pinned = if_match(&headers)?;
    let sub = find(&state, &caller, &id).await?;
    let url = match &body.url {
        Some(url) => Some(check_url(&state, url).await?),
        None => None,
    };
    if let Some(types) = &body.event_types {
        check_event_types(&state, types)?;
    }
    check_fields(
        body.description.as_ref(),
        body.filter.as_ref(),
        body.rate_limit.as_ref(),
        body.metadata.as_ref(),
    )?;
    check_owner_rules(
        &state,
        &sub.owner,
        body.event_types.as_deref(),
        body.rate_limit.as_ref(),
    )?;
    // What the credentials will be after this change, checked together.
    let headers = body
        .headers
        .as_ref()
        .map(|asked| credentials::merge_redacted(&sub.headers, &asked.clone().unwrap_or_default()));
    let mut auth = body.auth.as_ref().map(|asked| {
        asked
            .clone()
            .map(|a| keep_redacted_secret(a, sub.auth.as_deref()))
    });
    {
        let plain = |h: &BTreeMap<String, Secret>| -> BTreeMap<String, String> {
            h.iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect()
        };
        let effective_headers = plain(headers.as_ref().unwrap_or(&sub.headers));
        let mut current_auth = sub.auth.as_deref().cloned();
        let effective_auth = match &mut auth {
            Some(asked) => asked.as_mut(),
            None => current_auth.as_mut(),
        };
        let check_auth = body.auth.is_some();
        let has_auth = effective_auth.is_some();
        if check_auth {
            check_credentials(&state, Some(&effective_headers), effective_auth).await?;
        } else {
            credentials::check_headers(&effective_headers, has_auth)
                .map_err(|e| ApiError::invalid("invalid_headers", e.to_string()))?;
        }
    }
    if body.status == Some(Status::Disabled) {
        return Err(ApiError::invalid(
            "invalid_status",
            "status can be set to active or paused",
        ));
    }
    // Disabled by the system (health state): an owner's "active" re-enables.
    let disabled = find_live(&state, &caller, &id).await?.sub.status == Status::Disabled;
    // Only the named fields change, merged onto the latest version.
    let written = state
        .shared
        .store
        .update(&sub.id, pinned, |sub| {
            if let Some(url) = &url {
                sub.url = url.clone();
            }
            if let Some(types) = &body.event_types {
                sub.event_types = types.clone();
            }
            if let Some(d) = &body.description {
                sub.description = Some(d.clone());
            }
            if let Some(f) = &body.filter {
                sub.filter = (!f.as_object().is_some_and(|m| m.is_empty())).then(|| raw_json(f));
            }
            if let Some(r) = &body.rate_limit {
                sub.rate_limit = Some(r.clone());
            }
            if let Some(m) = &body.metadata {
                sub.metadata = Some(raw_json(m));
            }
            if let Some(h) = &headers {
                sub.headers = h.clone();
            }
            if let Some(a) = &auth {
                sub.auth = a.clone().map(Box::new);
            }
            if let Some(status) = body.status {
                if (disabled || sub.status == Status::Disabled) && status == Status::Active {
                    // Re-enabled by its owner: this edit supersedes the
                    // system's disable and the circuit state recorded
                    // before it (health written earlier no longer applies).
                    sub.reenabled_at = Some(Utc::now());
                    sub.circuit_open_until = None;
                    sub.failing_since = None;
                }
                sub.status = status;
                sub.disabled_reason = None;
                sub.disabled_at = None;
            }
            sub.updated_at = Utc::now();
            true
        })
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .map_err(|r| rejected(r, pinned.is_some()))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "subscription.update",
        &sub.id,
        Some(&sub.owner),
    )
    .await;
    Ok((
        etag(written.version),
        Json(SubscriptionView::from(written.as_ref())),
    ))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted; pending deliveries are dropped"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let pinned = if_match(&headers)?;
    let sub = find(&state, &caller, &id).await?;
    state
        .shared
        .store
        .delete(&sub.id, pinned)
        .await
        .map_err(|e| ApiError::unavailable(&e))?
        .map_err(|r| rejected(r, pinned.is_some()))?;
    tracing::info!(subscription_id = %sub.id, "Subscription deleted.");
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "subscription.delete",
        &sub.id,
        Some(&sub.owner),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
