//! What of a stack exists on the engine. One mechanism lists every kind of object seatrial
//! creates — services, containers, networks, volumes, secrets and configs — by the stack's
//! namespace label, by the run label, or by name, and removes the kinds that outlive services.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{Config, ContainerSummary, Network, Secret, Service, Volume};
use bollard::query_parameters::{
    ListConfigsOptions, ListContainersOptions, ListNetworksOptions, ListSecretsOptions,
    ListServicesOptions, ListVolumesOptions, RemoveVolumeOptions,
};

use super::SwarmEngine;
use crate::labels::{self, CREATED, STACK_NAMESPACE};
use crate::{EngineError, LabelledStack, Result};

/// The engine's list filters: `label`, `name`, `status`, ... → accepted values.
pub(crate) type Filters = HashMap<String, Vec<String>>;

/// Objects carrying the stack's namespace label.
pub(crate) fn stack_filter(stack: &str) -> Filters {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{STACK_NAMESPACE}={stack}")],
    )])
}

/// The kinds of engine object a stack is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Service,
    Container,
    Network,
    Volume,
    Secret,
    Config,
}

impl Kind {
    /// The word for one, in messages: `service`, `container`, ...
    pub(crate) fn one(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Container => "container",
            Self::Network => "network",
            Self::Volume => "volume",
            Self::Secret => "secret",
            Self::Config => "config",
        }
    }

    /// The word for several: `services`, `containers`, ...
    pub(crate) fn plural(self) -> String {
        format!("{}s", self.one())
    }
}

/// An engine object seatrial lists: how to list its kind, and its id, name and labels.
pub(crate) trait Listed: Sized + Send {
    const KIND: Kind;
    /// Every object of this kind matching `filters` (containers: stopped ones too).
    fn list(
        docker: &Docker,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Self>, BollardError>> + Send;
    fn id(&self) -> Option<&str>;
    fn name(&self) -> Option<&str>;
    fn labels(&self) -> Option<&HashMap<String, String>>;
}

/// An object an undeploy removes once nothing uses it (services and containers go otherwise).
pub(crate) trait Removable: Listed {
    fn remove(&self, docker: &Docker) -> impl Future<Output = Result<(), BollardError>> + Send;
}

/// The id, name and labels of a kind that keeps its name and labels in its spec (services,
/// secrets, configs).
macro_rules! identity_in_spec {
    () => {
        fn id(&self) -> Option<&str> {
            self.id.as_deref()
        }
        fn name(&self) -> Option<&str> {
            self.spec.as_ref()?.name.as_deref()
        }
        fn labels(&self) -> Option<&HashMap<String, String>> {
            self.spec.as_ref()?.labels.as_ref()
        }
    };
}

impl Listed for Service {
    const KIND: Kind = Kind::Service;
    fn list(
        docker: &Docker,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Self>, BollardError>> + Send {
        docker.list_services(Some(ListServicesOptions {
            filters: Some(filters),
            status: None,
        }))
    }
    identity_in_spec!();
}

impl Listed for ContainerSummary {
    const KIND: Kind = Kind::Container;
    fn list(
        docker: &Docker,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Self>, BollardError>> + Send {
        docker.list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
    }
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn name(&self) -> Option<&str> {
        let name = self.names.as_ref()?.first()?;
        Some(name.trim_start_matches('/'))
    }
    fn labels(&self) -> Option<&HashMap<String, String>> {
        self.labels.as_ref()
    }
}

impl Listed for Network {
    const KIND: Kind = Kind::Network;
    fn list(
        docker: &Docker,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Self>, BollardError>> + Send {
        docker.list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
    }
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn labels(&self) -> Option<&HashMap<String, String>> {
        self.labels.as_ref()
    }
}

impl Removable for Network {
    fn remove(&self, docker: &Docker) -> impl Future<Output = Result<(), BollardError>> + Send {
        docker.remove_network(self.id.as_deref().unwrap_or_default())
    }
}

impl Listed for Volume {
    const KIND: Kind = Kind::Volume;
    async fn list(docker: &Docker, filters: Filters) -> Result<Vec<Self>, BollardError> {
        let list = docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await?;
        Ok(list.volumes.unwrap_or_default())
    }
    /// A volume's id is its name.
    fn id(&self) -> Option<&str> {
        Some(&self.name)
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
    fn labels(&self) -> Option<&HashMap<String, String>> {
        Some(&self.labels)
    }
}

impl Removable for Volume {
    fn remove(&self, docker: &Docker) -> impl Future<Output = Result<(), BollardError>> + Send {
        docker.remove_volume(&self.name, None::<RemoveVolumeOptions>)
    }
}

impl Listed for Secret {
    const KIND: Kind = Kind::Secret;
    fn list(
        docker: &Docker,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Self>, BollardError>> + Send {
        docker.list_secrets(Some(ListSecretsOptions {
            filters: Some(filters),
        }))
    }
    identity_in_spec!();
}

impl Removable for Secret {
    fn remove(&self, docker: &Docker) -> impl Future<Output = Result<(), BollardError>> + Send {
        docker.delete_secret(self.id.as_deref().unwrap_or_default())
    }
}

impl Listed for Config {
    const KIND: Kind = Kind::Config;
    fn list(
        docker: &Docker,
        filters: Filters,
    ) -> impl Future<Output = Result<Vec<Self>, BollardError>> + Send {
        docker.list_configs(Some(ListConfigsOptions {
            filters: Some(filters),
        }))
    }
    identity_in_spec!();
}

impl Removable for Config {
    fn remove(&self, docker: &Docker) -> impl Future<Output = Result<(), BollardError>> + Send {
        docker.delete_config(self.id.as_deref().unwrap_or_default())
    }
}

impl SwarmEngine {
    /// Objects of one kind matching `filters`; `context` says what was being listed.
    pub(crate) async fn list<T: Listed>(
        &self,
        filters: Filters,
        context: String,
    ) -> Result<Vec<T>> {
        T::list(&self.docker, filters)
            .await
            .map_err(EngineError::api(context))
    }

    /// Objects of one kind that belong to the stack.
    pub(crate) async fn in_stack<T: Listed>(&self, stack: &str) -> Result<Vec<T>> {
        let context = format!("listing {} of stack `{stack}`", T::KIND.plural());
        self.list(stack_filter(stack), context).await
    }

    /// Name → id of the objects of one kind named in `names`, whoever owns them.
    pub(crate) async fn ids_by_name<T: Listed>(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, String>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let filters = HashMap::from([("name".to_owned(), names.to_vec())]);
        let context = format!("listing {}", T::KIND.plural());
        let list: Vec<T> = self.list(filters, context).await?;
        // The engine's name filter matches prefixes: keep exact names only.
        Ok(list
            .iter()
            .filter_map(|o| Some((o.name()?.to_owned(), o.id()?.to_owned())))
            .filter(|(name, _)| names.contains(name))
            .collect())
    }

    /// The labels of every object of one kind that carries the run label.
    async fn run_labels<T: Listed>(&self) -> Result<Vec<HashMap<String, String>>> {
        let filters = HashMap::from([("label".to_owned(), vec![labels::RUN.to_owned()])]);
        let context = format!("listing seatrial-labelled {}", T::KIND.plural());
        let list: Vec<T> = self.list(filters, context).await?;
        Ok(list
            .iter()
            .map(|o| o.labels().cloned().unwrap_or_default())
            .collect())
    }

    /// Every stack with seatrial-labelled objects of any kind (also orphans a killed run left
    /// without services), grouped by stack namespace.
    pub(super) async fn seatrial_stacks(&self) -> Result<Vec<LabelledStack>> {
        let mut all = self.run_labels::<Service>().await?;
        all.extend(self.run_labels::<ContainerSummary>().await?);
        all.extend(self.run_labels::<Network>().await?);
        all.extend(self.run_labels::<Volume>().await?);
        all.extend(self.run_labels::<Secret>().await?);
        all.extend(self.run_labels::<Config>().await?);
        let mut stacks: BTreeMap<String, LabelledStack> = BTreeMap::new();
        for labels in all {
            // Only objects in a stack namespace: seatrial never touches anything else.
            let Some(stack) = labels.get(STACK_NAMESPACE) else {
                continue;
            };
            let entry = stacks
                .entry(stack.clone())
                .or_insert_with(|| LabelledStack {
                    stack: stack.clone(),
                    runs: Vec::new(),
                    kinds: Vec::new(),
                    created: None,
                    objects: 0,
                });
            entry.objects += 1;
            for (key, list) in [
                (labels::RUN, &mut entry.runs),
                (labels::KIND, &mut entry.kinds),
            ] {
                if let Some(v) = labels.get(key)
                    && !list.contains(v)
                {
                    list.push(v.clone());
                }
            }
            if let Some(created) = labels.get(CREATED)
                && entry.created.as_ref().is_none_or(|c| created < c)
            {
                entry.created = Some(created.clone());
            }
        }
        Ok(stacks.into_values().collect())
    }
}
