//! What both engine test suites need besides the engine under test.

/// A Docker API client of the tests' own, on the engine `SwarmEngine::connect` reaches
/// (`DOCKER_HOST`): what the tests check is looked at independently of the code under test,
/// and raw calls the engine does not offer are made here.
pub async fn api_client() -> bollard::Docker {
    bollard::Docker::connect_with_defaults()
        .expect("a Docker client from DOCKER_HOST")
        .negotiate_version()
        .await
        .expect("the engine answers the version negotiation")
}
