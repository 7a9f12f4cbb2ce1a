//! Who is asking: accounts, passwords, access tokens and the Matrix login
//! routes (`/_matrix/client/{versions,v3/login,v3/account/whoami,v3/logout}`).
//! Admin handlers call [`require_admin`] first, as Synapse checks auth before
//! anything else. Attached to a Synapse (`[synapse]`), a token is Synapse's
//! and Synapse says whose it is and whether they are an admin
//! (`crate::synapse`); Herald's own accounts are not used.

pub mod password;
pub mod ratelimit;
pub mod token;

use axum::http::{header::AUTHORIZATION, HeaderMap, Uri};
use herald_shared::RawQuery;

use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::synapse::TokenCheck;
use herald_store::{users::TokenOwner, Store};

/// Extracts the access token as Synapse does: one `Authorization: Bearer`
/// header, or the `access_token` query parameter, never both.
pub fn access_token(headers: &HeaderMap, uri: &Uri) -> ApiResult<String> {
    let query = RawQuery::parse(uri.query().unwrap_or(""));
    let from_query = query.first("access_token");
    let auth_headers: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
    if let Some(first) = auth_headers.first() {
        if from_query.is_some() {
            return Err(ApiError::missing_token(
                "Mixing Authorization headers and access_token query parameters.",
            ));
        }
        if auth_headers.len() > 1 {
            return Err(ApiError::missing_token("Too many Authorization headers."));
        }
        let parts: Vec<&[u8]> = first.as_bytes().split(|&b| b == b' ').collect();
        return match parts.as_slice() {
            [b"Bearer", token] => Ok(String::from_utf8_lossy(token).into_owned()),
            _ => Err(ApiError::missing_token("Invalid Authorization header.")),
        };
    }
    match from_query {
        Some(token) => Ok(String::from_utf8_lossy(token).into_owned()),
        None => Err(ApiError::missing_token("Missing access token")),
    }
}

/// The owner of the request's access token (401 if missing or unknown):
/// Herald's account, or attached, the Synapse user (whose `user` is then
/// the whole user ID).
pub async fn require_user(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> ApiResult<TokenOwner> {
    match &state.synapse {
        Some(synapse) => {
            let token = access_token(headers, uri)?;
            match synapse.check_token(&token).await? {
                TokenCheck::Valid(verdict) => Ok(TokenOwner {
                    user: verdict.user_id,
                    admin: verdict.admin,
                    device_id: verdict.device_id.unwrap_or_default(),
                }),
                TokenCheck::Refused(answer) => Err(answer.into_error()),
            }
        }
        None => Ok(authenticate(&state.store, headers, uri).await?.0),
    }
}

/// The owner of the request's access token and the token's stored hash.
pub async fn authenticate(
    store: &Store,
    headers: &HeaderMap,
    uri: &Uri,
) -> ApiResult<(TokenOwner, Vec<u8>)> {
    let hash = token::hash(&access_token(headers, uri)?);
    let owner = store
        .users
        .token_owner(&hash)
        .await?
        .ok_or_else(ApiError::unknown_token)?;
    Ok((owner, hash))
}

/// As [`require_user`], and 403 unless the user is a server admin.
pub async fn require_admin(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> ApiResult<TokenOwner> {
    let owner = require_user(state, headers, uri).await?;
    if !owner.admin {
        return Err(ApiError::forbidden("You are not a server admin"));
    }
    Ok(owner)
}
