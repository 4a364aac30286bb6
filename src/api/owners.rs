//! Owners as data (admin token): owners with their scope and limits, their
//! API keys and portal sessions; and `GET /v1/me`, where an owner reads its
//! own record.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::audit::{self, RequestMeta};
use super::auth::{require_admin, Caller};
use super::error::{ApiError, ErrorBody};
use super::pagination::{page_limit, Page};
use super::{ApiJson, ApiPath, ApiQuery, AppState};
use crate::events::filter::Filter;
use crate::owners::{
    new_id, new_token, token_digest, valid_owner_id, ApiKey, Owner, OwnerStatus, Scope, Session,
    KEY_PREFIX, SESSION_PREFIX,
};

/// Portal session lifetimes: default and maximum.
const SESSION_TTL_DEFAULT: std::time::Duration = std::time::Duration::from_secs(3600);
const SESSION_TTL_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOwner {
    /// 1 to 64 of `a-z 0-9 _ -`, chosen by the admin; not `admin`.
    id: String,
    name: String,
    /// `active` (default) or `suspended`.
    status: Option<OwnerStatus>,
    /// Absent: unrestricted.
    scope: Option<Scope>,
    /// Absent: `api.max_subscriptions_per_owner`.
    max_subscriptions: Option<usize>,
    /// Highest `rate_limit.per_second` of its subscriptions, and the rate of
    /// those that set none. Absent: no limit.
    max_rate_per_second: Option<u32>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// Fields to change; `null` removes `scope`, `max_subscriptions`,
/// `max_rate_per_second` or `metadata`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOwner {
    name: Option<String>,
    status: Option<OwnerStatus>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Scope>)]
    scope: Option<Option<Scope>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<usize>)]
    max_subscriptions: Option<Option<usize>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    max_rate_per_second: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Option<Value>>,
}

/// A field that is present (maybe `null`) versus absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1 to 250, default 50.
    limit: Option<usize>,
    cursor: Option<String>,
}

fn check_scope(state: &AppState, scope: &Scope) -> Result<(), ApiError> {
    if scope.event_types.is_empty() || scope.event_types.len() > 50 {
        return Err(ApiError::invalid(
            "invalid_scope",
            "scope.event_types must list 1 to 50 types",
        ));
    }
    if let Some(unknown) = scope
        .event_types
        .iter()
        .find(|t| !state.shared.catalog.matches_any(t))
    {
        return Err(ApiError::invalid(
            "invalid_scope",
            format!("scope event type {unknown:?} matches nothing in the catalog"),
        ));
    }
    if let Some(filter) = &scope.filter {
        Filter::compile(filter)
            .map_err(|e| ApiError::invalid("invalid_scope", format!("scope.filter: {e}")))?;
    }
    Ok(())
}

fn check_limits(max_rate: Option<u32>, name: Option<&str>) -> Result<(), ApiError> {
    if max_rate.is_some_and(|r| !(1..=100_000).contains(&r)) {
        return Err(ApiError::invalid(
            "invalid_rate_limit",
            "max_rate_per_second must be between 1 and 100000",
        ));
    }
    if name.is_some_and(|n| n.trim().is_empty() || n.len() > 200) {
        return Err(ApiError::invalid(
            "invalid_name",
            "name must be 1 to 200 characters",
        ));
    }
    Ok(())
}

/// A JSON body that may be absent (empty).
fn optional_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))
}

fn existing(state: &AppState, id: &str) -> Result<Owner, ApiError> {
    state
        .shared
        .owners
        .get(id)
        .map(|o| o.owner.clone())
        .ok_or_else(|| ApiError::not_found("owner"))
}

#[utoipa::path(post, path = "/v1/owners", tag = "owners",
    request_body = CreateOwner,
    responses(
        (status = 201, body = Owner),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "An owner with this id exists", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateOwner>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    if !valid_owner_id(&body.id) {
        return Err(ApiError::invalid(
            "invalid_owner",
            "id must be 1 to 64 of a-z, 0-9, _ and -, and not \"admin\"",
        ));
    }
    if let Some(scope) = &body.scope {
        check_scope(&state, scope)?;
    }
    check_limits(body.max_rate_per_second, Some(&body.name))?;
    if state.shared.owners.get(&body.id).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "exists",
            format!("owner {} exists", body.id),
        ));
    }
    let now = Utc::now();
    let owner = Owner {
        id: body.id,
        name: body.name,
        status: body.status.unwrap_or(OwnerStatus::Active),
        scope: body.scope,
        max_subscriptions: body.max_subscriptions,
        max_rate_per_second: body.max_rate_per_second,
        metadata: body.metadata,
        created_at: now,
        updated_at: now,
    };
    state
        .shared
        .owners
        .put_owner(&owner)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "owner.create",
        &owner.id,
        Some(&owner.id),
    )
    .await;
    Ok((StatusCode::CREATED, Json(owner)))
}

#[utoipa::path(get, path = "/v1/owners", tag = "owners",
    params(ListQuery),
    responses(
        (status = 200, body = Page<Owner>),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Owner>>, ApiError> {
    require_admin(&caller)?;
    let limit = page_limit(q.limit)?;
    let (data, more) = state.shared.owners.list(q.cursor.as_deref(), limit);
    let next_cursor = more.then(|| data.last().map(|o| o.id.clone())).flatten();
    Ok(Json(Page { data, next_cursor }))
}

#[utoipa::path(get, path = "/v1/owners/{id}", tag = "owners",
    params(("id" = String, Path, description = "Owner id")),
    responses(
        (status = 200, body = Owner),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Owner>, ApiError> {
    require_admin(&caller)?;
    existing(&state, &id).map(Json)
}

#[utoipa::path(patch, path = "/v1/owners/{id}", tag = "owners",
    params(("id" = String, Path, description = "Owner id")),
    request_body = UpdateOwner,
    responses(
        (status = 200, body = Owner),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateOwner>,
) -> Result<Json<Owner>, ApiError> {
    require_admin(&caller)?;
    let mut owner = existing(&state, &id)?;
    if let Some(Some(scope)) = &body.scope {
        check_scope(&state, scope)?;
    }
    check_limits(body.max_rate_per_second.flatten(), body.name.as_deref())?;
    if let Some(name) = body.name {
        owner.name = name;
    }
    if let Some(status) = body.status {
        owner.status = status;
    }
    if let Some(scope) = body.scope {
        owner.scope = scope;
    }
    if let Some(max) = body.max_subscriptions {
        owner.max_subscriptions = max;
    }
    if let Some(max) = body.max_rate_per_second {
        owner.max_rate_per_second = max;
    }
    if let Some(metadata) = body.metadata {
        owner.metadata = metadata;
    }
    owner.updated_at = Utc::now();
    state
        .shared
        .owners
        .put_owner(&owner)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "owner.update",
        &id,
        Some(&id),
    )
    .await;
    Ok(Json(owner))
}

#[utoipa::path(delete, path = "/v1/owners/{id}", tag = "owners",
    params(("id" = String, Path, description = "Owner id")),
    responses(
        (status = 204, description = "Deleted with its keys and sessions"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "It still owns subscriptions", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    existing(&state, &id)?;
    // Its subscriptions would lose their scope with it: delete them first.
    let owned = state.shared.store.count_owned(&id);
    if owned > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "owner_has_subscriptions",
            format!("owner {id} still has {owned} subscriptions; delete them first"),
        ));
    }
    state
        .shared
        .owners
        .delete_owner(&id)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "owner.delete",
        &id,
        Some(&id),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// An API key as listed: never its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    created_at: DateTime<Utc>,
    /// Accurate to about a minute.
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    /// Only in the answer to its creation: shown once, stored as sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl KeyView {
    fn new(key: &ApiKey, last_used_at: Option<DateTime<Utc>>) -> Self {
        KeyView {
            id: key.id.clone(),
            name: key.name.clone(),
            created_at: key.created_at,
            last_used_at,
            expires_at: key.expires_at,
            token: None,
        }
    }
}

#[utoipa::path(post, path = "/v1/owners/{id}/keys", tag = "owners",
    params(("id" = String, Path, description = "Owner id")),
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key with its token, shown this once", body = KeyView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "`invalid_name`, or `invalid_expires_at`: not in the future", body = ErrorBody),
    ))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    existing(&state, &id)?;
    let body = optional_json(&body)?.unwrap_or(CreateKey {
        name: None,
        expires_at: None,
    });
    if body.name.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(ApiError::invalid(
            "invalid_name",
            "name must be at most 200 characters",
        ));
    }
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::invalid(
            "invalid_expires_at",
            "expires_at must be in the future",
        ));
    }
    let token = new_token(KEY_PREFIX);
    let key = ApiKey {
        id: new_id("key_"),
        owner: id.clone(),
        name: body.name,
        token_sha256: token_digest(&token),
        created_at: Utc::now(),
        expires_at: body.expires_at,
    };
    state
        .shared
        .owners
        .put_key(&key)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "owner.key.create",
        &key.id,
        Some(&id),
    )
    .await;
    let mut view = KeyView::new(&key, None);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/owners/{id}/keys", tag = "owners",
    params(("id" = String, Path, description = "Owner id")),
    responses(
        (status = 200, body = Page<KeyView>),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Page<KeyView>>, ApiError> {
    require_admin(&caller)?;
    existing(&state, &id)?;
    let data = state
        .shared
        .owners
        .keys(&id)
        .iter()
        .map(|(k, used)| KeyView::new(k, *used))
        .collect();
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

#[utoipa::path(delete, path = "/v1/owners/{id}/keys/{key_id}", tag = "owners",
    params(
        ("id" = String, Path, description = "Owner id"),
        ("key_id" = String, Path, description = "Key id"),
    ),
    responses(
        (status = 204, description = "Revoked: it answers 401 on every instance within seconds"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    let owners = &state.shared.owners;
    if owners.key(&key_id).is_none_or(|k| k.owner != id) {
        return Err(ApiError::not_found("key"));
    }
    owners
        .revoke_key(&key_id)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "owner.key.revoke",
        &key_id,
        Some(&id),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// How long the session lasts, e.g. `"30m"`: default 1h, at most 24h.
    ttl: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The portal, signed in: `<api.public_url or Host>/portal#token=<token>`.
    url: String,
    /// Acts as the owner alone until `expires_at` or until revoked.
    token: String,
    expires_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/v1/owners/{id}/portal-sessions", tag = "owners",
    params(("id" = String, Path, description = "Owner id")),
    request_body = CreateSession,
    responses(
        (status = 201, body = SessionView),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    existing(&state, &id)?;
    let ttl = match optional_json::<CreateSession>(&body)?.and_then(|b| b.ttl) {
        None => SESSION_TTL_DEFAULT,
        Some(text) => humantime::parse_duration(text.trim())
            .ok()
            .filter(|d| !d.is_zero() && *d <= SESSION_TTL_MAX)
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_ttl",
                    "ttl must be a duration such as \"30m\", at most 24h",
                )
            })?,
    };
    let token = new_token(SESSION_PREFIX);
    let now = Utc::now();
    let session = Session {
        id: new_id("ses_"),
        owner: id.clone(),
        token_sha256: token_digest(&token),
        created_at: now,
        expires_at: now + chrono::TimeDelta::from_std(ttl).unwrap_or_default(),
    };
    state
        .shared
        .owners
        .put_session(&session)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "owner.portal_session.create",
        &session.id,
        Some(&id),
    )
    .await;
    let public_url = &state.shared.settings.api.public_url;
    let base = if public_url.is_empty() {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    } else {
        public_url.trim_end_matches('/').to_string()
    };
    Ok((
        StatusCode::CREATED,
        Json(SessionView {
            url: format!("{base}/portal#token={token}"),
            token,
            expires_at: session.expires_at,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/owners/{id}/portal-sessions", tag = "owners",
    params(("id" = String, Path, description = "Owner id")),
    responses(
        (status = 204, description = "Every portal session of the owner is revoked"),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    caller: Caller,
    meta: RequestMeta,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller)?;
    existing(&state, &id)?;
    state
        .shared
        .owners
        .revoke_sessions(&id)
        .await
        .map_err(|e| ApiError::unavailable(&e))?;
    audit::record(
        &state.shared,
        &caller,
        &meta,
        "owner.portal_session.revoke_all",
        &id,
        Some(&id),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller as the API sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The owner id, or `admin`.
    id: String,
    /// The owner's record (read-only here); absent for the admin and for
    /// bootstrap owners of `[api.tokens]` (unrestricted scope).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
    /// Subscriptions it has.
    subscriptions: usize,
    /// Subscriptions it may have.
    max_subscriptions: usize,
}

#[utoipa::path(get, path = "/v1/me", tag = "owners",
    responses(
        (status = 200, body = Me),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The owner is suspended", body = ErrorBody),
    ))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Json<Me> {
    let shared = &state.shared;
    match caller {
        Caller::Admin => Json(Me {
            id: "admin".into(),
            owner: None,
            subscriptions: shared.store.count_owned("admin"),
            max_subscriptions: shared.settings.api.max_subscriptions_per_owner,
        }),
        Caller::Owner(id) => {
            let owner = shared.owners.get(&id).map(|o| o.owner.clone());
            Json(Me {
                subscriptions: shared.store.count_owned(&id),
                max_subscriptions: max_subscriptions(shared, owner.as_ref()),
                owner,
                id,
            })
        }
    }
}

/// The subscriptions an owner may have.
pub(crate) fn max_subscriptions(shared: &crate::context::Shared, owner: Option<&Owner>) -> usize {
    let global = shared.settings.api.max_subscriptions_per_owner;
    owner
        .and_then(|o| o.max_subscriptions)
        .map_or(global, |m| m.min(global))
}
