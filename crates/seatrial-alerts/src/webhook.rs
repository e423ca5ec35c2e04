//! The webhook target: the alert as JSON in a POST.

use crate::http::{accepted, client, request_failed};
use crate::{Alert, AlertError};

pub(crate) async fn send(described: &str, url: &str, alert: &Alert) -> Result<(), AlertError> {
    let response = client(described)?
        .post(url)
        .json(alert)
        .send()
        .await
        .map_err(|err| request_failed(described, err, &[]))?;
    accepted(described, response, &[]).await
}
