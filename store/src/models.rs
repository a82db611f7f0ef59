//! sea-orm models of the catalog tables. Rows never leave this crate: the public
//! API converts them to domain values.

pub(crate) mod entity_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "entities")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub entity_ref: String,
        pub kind: String,
        pub namespace: String,
        pub name: String,
        pub uid: String,
        pub etag: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub body: Json,
        pub owner_ref: Option<String>,
        pub lifecycle: Option<String>,
        pub spec_type: Option<String>,
        pub system_ref: Option<String>,
        pub title: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub search_text: String,
        pub provider: String,
        pub location_key: Option<String>,
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub errors: Option<Json>,
        /// The admission policies' `warn` violations it was admitted with.
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub violations: Option<Json>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod relation_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "relations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub origin_id: i64,
        pub source_ref: String,
        pub relation_type: String,
        pub target_ref: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod facet_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "entity_facets")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub entity_id: i64,
        pub key: String,
        pub value: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod change_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "change_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub created_at: DateTimeUtc,
        pub entity_ref: String,
        pub change_type: String,
        pub etag: Option<String>,
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub body: Option<Json>,
        pub provider: String,
        /// Field paths an update changed (JSON array of strings).
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub changed_fields: Option<Json>,
        /// For a removal, the last version of the removed entity.
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub previous_body: Option<Json>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod location_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "locations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub provider: String,
        pub target: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub error: Option<String>,
        pub n_entities: i64,
        pub updated_at: DateTimeUtc,
        pub read_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod conflict_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "conflicts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub entity_ref: String,
        pub owner_provider: String,
        pub owner_location: Option<String>,
        pub claimant_provider: String,
        pub claimant_location: Option<String>,
        pub detected_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod token_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        #[sea_orm(unique)]
        pub public_id: String,
        pub secret_hash: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub scopes: Json,
        pub created_at: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod audit_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub time: DateTimeUtc,
        pub principal: String,
        pub token_id: Option<i64>,
        pub operation: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub targets: Json,
        pub decision: String,
        #[sea_orm(column_type = "Text")]
        pub result: String,
        pub request_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod task_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "scaffolder_tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub template_ref: String,
        pub status: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub parameters: Json,
        pub dry_run: bool,
        pub created_by: String,
        pub idempotency_key: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub claimed_by: Option<String>,
        pub heartbeat_at: Option<DateTimeUtc>,
        pub next_step: i32,
        #[sea_orm(column_type = "JsonBinary")]
        pub step_outputs: Json,
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub output: Option<Json>,
        #[sea_orm(column_type = "Text", nullable)]
        pub error: Option<String>,
        pub cancel_requested: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod task_event_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "scaffolder_task_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub task_id: String,
        pub created_at: DateTimeUtc,
        #[sea_orm(column_type = "JsonBinary")]
        pub body: Json,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod scorecard_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "scorecards")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub version: String,
        #[sea_orm(column_type = "Text")]
        pub source: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub summary: Json,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod entity_score_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "entity_scores")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub scorecard: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub entity_ref: String,
        pub level: Option<String>,
        pub score: f64,
        /// The rules it fails, `,a,b,` (empty: none).
        #[sea_orm(column_type = "Text")]
        pub failing: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub results: Json,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod score_change_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "score_changes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub sequence: i64,
        pub time: DateTimeUtc,
        pub scorecard: String,
        pub entity_ref: String,
        pub level_before: Option<String>,
        pub level: Option<String>,
        pub score: Option<f64>,
        #[sea_orm(column_type = "JsonBinary")]
        pub rules: Json,
        pub removed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod health_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "catalog_health")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub recorded_at: DateTimeUtc,
        #[sea_orm(column_type = "JsonBinary")]
        pub figures: Json,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod pending_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pending_entities")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub entity_ref: String,
        pub provider: String,
        pub location_key: Option<String>,
        #[sea_orm(column_type = "JsonBinary")]
        pub body: Json,
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub violations: Option<Json>,
        pub etag: String,
        pub reason: String,
        pub previous_owner: Option<String>,
        pub owner_ref: Option<String>,
        pub policy: String,
        pub owner_may_approve: bool,
        pub status: String,
        pub queued_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub decided_by: Option<String>,
        pub decided_at: Option<DateTimeUtc>,
        pub note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod review_event_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "review_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub sequence: i64,
        pub entity_ref: String,
        pub event: String,
        pub principal: String,
        pub note: Option<String>,
        pub time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
