//! `kind = "swarm"`: the gate's checkout is the recipe, deployed at the commit under test as the
//! stack `stack` by the infra lifecycle ([`seatrial_trial::infra::gate::CommitDeploy`]): a
//! stateful stack is snapshotted first, the deploy must converge and serve, and a rollback puts
//! the previous commit back with its data.

use std::path::Path;
use std::time::Duration;

use seatrial_trial::infra::InfraApp;
use seatrial_trial::infra::gate::CommitDeploy;
use seatrial_trial::settings::Overrides;

use crate::StageFailure;
use crate::deploy::{DeployError, Deployer};

/// The infra app a swarm gate deploys: the stack, from the checkout's repository, converged and
/// serving within `timeout` (the readiness timeout).
pub fn swarm_app(stack: &str, checkout: &Path, timeout: Duration) -> InfraApp {
    InfraApp {
        name: stack.to_owned(),
        recipe: checkout.display().to_string(),
        policy: Default::default(),
        domain: None,
        hold_patterns: Vec::new(),
        health_timeout: timeout,
        overrides: Overrides::default(),
    }
}

/// A [`Deployer`] over [`CommitDeploy`].
pub struct SwarmDeployer {
    deploy: CommitDeploy,
}

impl SwarmDeployer {
    pub fn new(deploy: CommitDeploy) -> Self {
        Self { deploy }
    }
}

#[async_trait::async_trait]
impl Deployer for SwarmDeployer {
    async fn deploy(&self) -> Result<String, DeployError> {
        self.deploy.deploy().await.map_err(|e| DeployError {
            failure: StageFailure::Fail(e.message),
            nothing_deployed: e.nothing_deployed,
        })
    }

    fn can_roll_back(&self) -> bool {
        true
    }

    async fn rollback(&self) -> Result<String, StageFailure> {
        self.deploy.roll_back().await.map_err(StageFailure::Fail)
    }

    async fn confirm(&self) -> Result<String, StageFailure> {
        self.deploy.confirm().await.map_err(|e| {
            StageFailure::Error(
                format!(
                    "the app is ready, but {} could not be recorded as last-good: {e}; the next gate will roll it back unless this is fixed",
                    self.deploy.version()
                ),
                crate::ErrorKind::Infrastructure,
            )
        })
    }
}
