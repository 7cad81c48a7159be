//! The cluster's state as the control API shows it.

use fogwire_cluster_proto::placement::Placement;

use crate::manifest::Applied;
use crate::supervise::{RunState, Running};

pub(crate) fn manifest(applied: &Applied) -> fogwire_api::ClusterManifest {
    fogwire_api::ClusterManifest {
        seq: applied.seq,
        content: applied.content.to_string(),
        published_at_unix_ms: applied.published_at_ms,
        services: applied
            .manifest
            .services
            .iter()
            .map(|service| fogwire_api::ClusterServiceSpec {
                name: service.spec.name.clone(),
                kind: service.kind.as_str().to_owned(),
                count: service.spec.count,
                cores: service.spec.needs.cores,
                memory_mib: service.spec.needs.memory_mib,
                disk_mib: service.spec.needs.disk_mib,
                pin: service.spec.pinned.map(|pin| pin.to_string()),
                shares_board: service.spec.shares_board,
                blobs: service.blobs.iter().map(hex::encode).collect(),
                config: service.config.map(hex::encode),
            })
            .collect(),
    }
}

pub(crate) fn placement(placement: &Placement) -> (Vec<fogwire_api::PlacedInstance>, Vec<String>) {
    let placed = placement
        .assigned
        .iter()
        .map(|(instance, board)| fogwire_api::PlacedInstance {
            service: instance.service.clone(),
            replica: instance.replica,
            board: board.to_string(),
        })
        .collect();
    let unplaced = placement
        .unplaced
        .iter()
        .map(|instance| format!("{}#{}", instance.service, instance.replica))
        .collect();
    (placed, unplaced)
}

pub(crate) fn service(running: &Running) -> fogwire_api::ClusterServiceState {
    fogwire_api::ClusterServiceState {
        name: running.service.spec.name.clone(),
        kind: running.service.kind.as_str().to_owned(),
        state: running.state.as_str().to_owned(),
        error: match &running.state {
            RunState::Failed(why) => Some(why.clone()),
            _ => None,
        },
        since_secs: running.since.elapsed().as_secs_f64(),
    }
}
