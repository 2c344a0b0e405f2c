//! Kubernetes admission types and the verdict post-processing (reference §4).
//!
//! - [`types`]: the AdmissionReview/AdmissionResponse wire types;
//! - [`response`]: policy verdict → AdmissionResponse (JSONPatch, status);
//! - [`post_process`](mod@post_process): policy mode, `allowedToMutate` and custom message;
//! - [`limits`]: caps on the message, warnings, audit annotations and patch.
//!
//! The `portcullis` CLI uses the same functions so that `portcullis run` and
//! the policy-server answer identically.

pub mod limits;
pub mod post_process;
pub mod response;
pub mod types;

pub use limits::{ResponseLimits, cap_response, cap_text};
pub use post_process::{PolicyBehaviour, post_process};
pub use response::{
    build_admission_response, build_admission_response_limited, evaluation_error_response,
};
pub use types::{
    ADMISSION_API_VERSION, ADMISSION_KIND, AdmissionResponse, AdmissionReviewResponse,
    AdmissionStatus, StatusCause, StatusDetails,
};
