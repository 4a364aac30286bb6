//! Pagination shared by every list call: `limit` and a cursor in, a page out.

use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;

/// A list call's `limit`: 1 to 250, default 50.
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=250).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request("limit must be between 1 and 250"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}
