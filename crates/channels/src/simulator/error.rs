//! Twilio's REST error body: `{"code", "message", "more_info", "status"}`. Messages never
//! repeat the phone numbers or text they refuse.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TwilioError {
    pub status: StatusCode,
    pub code: u32,
    pub message: &'static str,
}

#[derive(Serialize)]
struct Body<'a> {
    code: u32,
    message: &'a str,
    more_info: String,
    status: u16,
}

impl TwilioError {
    const fn new(status: StatusCode, code: u32, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    const fn bad_request(code: u32, message: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub const fn authenticate() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
    }
    pub const fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        )
    }
    pub const fn too_many_requests() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
    }
    pub const fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        )
    }
    pub const fn invalid_parameter(message: &'static str) -> Self {
        Self::bad_request(20001, message)
    }
    pub const fn to_required() -> Self {
        Self::bad_request(21604, "A 'To' phone number is required.")
    }
    pub const fn to_invalid() -> Self {
        Self::bad_request(21211, "The 'To' number is not a valid phone number.")
    }
    pub const fn sender_required() -> Self {
        Self::bad_request(
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
        )
    }
    pub const fn from_invalid() -> Self {
        Self::bad_request(
            21212,
            "The 'From' number is not a valid phone number, shortcode, or alphanumeric sender ID.",
        )
    }
    pub const fn service_invalid() -> Self {
        Self::bad_request(21705, "The Messaging Service is invalid.")
    }
    pub const fn same_to_and_from() -> Self {
        Self::bad_request(21266, "'To' and 'From' number cannot be the same.")
    }
    pub const fn body_required() -> Self {
        Self::bad_request(21602, "Message body is required.")
    }
    pub const fn body_too_long() -> Self {
        Self::bad_request(
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        )
    }
    pub const fn too_many_media() -> Self {
        Self::bad_request(21623, "Number of media files exceeds allowed limit.")
    }
    pub const fn media_url_invalid() -> Self {
        Self::bad_request(21620, "Invalid media URL(s).")
    }
    pub const fn status_callback_invalid() -> Self {
        Self::bad_request(21609, "Invalid 'StatusCallback'.")
    }
    pub const fn unsubscribed() -> Self {
        Self::bad_request(21610, "Attempt to send to unsubscribed recipient")
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: self.message,
            more_info: format!("https://www.twilio.com/docs/errors/{}", self.code),
            status: self.status.as_u16(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
        }
        response
    }
}
