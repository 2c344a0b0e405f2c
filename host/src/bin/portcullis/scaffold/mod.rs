//! `portcullis scaffold`: generators for policy authors.

mod manifest;
mod project;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ScaffoldCommand {
    /// Print a ClusterAdmissionPolicy, AdmissionPolicy or
    /// ClusterAdmissionPolicyGroup manifest for a module, from the metadata
    /// it carries.
    Manifest(manifest::ManifestArgs),
    /// Create a new policy project: source, build script, metadata, a test
    /// file for `portcullis test`, and a README.
    Policy(project::PolicyArgs),
}

pub async fn scaffold(command: ScaffoldCommand) -> anyhow::Result<()> {
    match command {
        ScaffoldCommand::Manifest(args) => manifest::manifest(args).await,
        ScaffoldCommand::Policy(args) => project::policy(args),
    }
}
