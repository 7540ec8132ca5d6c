//! gRPC services and messages generated from `proto/` (tonic + prost).

pub mod raft {
    pub mod v1 {
        tonic::include_proto!("ganymede.raft.v1");
    }
}

pub mod edge {
    pub mod v1 {
        tonic::include_proto!("ganymede.edge.v1");
    }
}
