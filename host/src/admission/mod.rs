//! Kubernetes admission types and the verdict post-processing (reference §4).
//!
//! - [`types`]: the AdmissionReview/AdmissionResponse wire types;
//! - [`response`]: policy verdict → AdmissionResponse (JSONPatch, status);
//! - [`post_process`]: policy mode, `allowedToMutate` and custom message.
//!
//! The `portcullis` CLI uses the same functions so that `portcullis run` and
//! the policy-server answer identically.

pub mod post_process;
pub mod response;
pub mod types;

pub use post_process::{PolicyBehaviour, post_process};
pub use response::{build_admission_response, evaluation_error_response};
pub use types::{
    ADMISSION_API_VERSION, ADMISSION_KIND, AdmissionResponse, AdmissionReviewResponse,
    AdmissionStatus, StatusCause, StatusDetails,
};
