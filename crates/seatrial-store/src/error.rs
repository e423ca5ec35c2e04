//! The store's one error type. Database driver errors stop here: callers get what was being
//! done and the driver's message, never a driver type.

/// What went wrong, with which database, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the database {url}: {message} (check SEATRIAL_DATABASE_URL / database_url)"
    )]
    Open { url: String, message: String },
    #[error("cannot migrate the database {url}: {message}")]
    Migrate { url: String, message: String },
    #[error("database error while {doing}: {message}")]
    Query {
        doing: &'static str,
        message: String,
    },
    /// A column holds a word seatrial does not know (a newer server wrote it, or a hand edit).
    #[error("the database holds a {what} seatrial does not know: {value:?}")]
    Unknown { what: &'static str, value: String },
}

/// Maps a driver error to [`StoreError::Query`], naming what was being done.
pub(crate) fn query_error(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query {
        doing,
        message: source.to_string(),
    }
}
