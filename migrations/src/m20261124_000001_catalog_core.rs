//! The catalog core: entities, their relations, the filter/facet index, the
//! change log, locations and ownership conflicts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_pk_auto, json_binary, json_binary_null, string, string_null, text, timestamp_with_time_zone,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Entities {
    Table,
    Id,
    EntityRef,
    Kind,
    Namespace,
    Name,
    Uid,
    Etag,
    Body,
    OwnerRef,
    Lifecycle,
    SpecType,
    SystemRef,
    Title,
    SearchText,
    Provider,
    LocationKey,
    Errors,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Relations {
    Table,
    Id,
    OriginId,
    SourceRef,
    RelationType,
    TargetRef,
}

#[derive(DeriveIden)]
enum EntityFacets {
    Table,
    Id,
    EntityId,
    Key,
    Value,
}

#[derive(DeriveIden)]
enum ChangeLog {
    Table,
    Seq,
    CreatedAt,
    EntityRef,
    ChangeType,
    Etag,
    Body,
    Provider,
}

#[derive(DeriveIden)]
enum Locations {
    Table,
    Id,
    Provider,
    Target,
    Error,
    NEntities,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Conflicts {
    Table,
    Id,
    EntityRef,
    OwnerProvider,
    OwnerLocation,
    ClaimantProvider,
    ClaimantLocation,
    DetectedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Entities::Table)
                    .col(big_pk_auto(Entities::Id))
                    .col(string(Entities::EntityRef).unique_key())
                    .col(string(Entities::Kind))
                    .col(string(Entities::Namespace))
                    .col(string(Entities::Name))
                    .col(string(Entities::Uid).unique_key())
                    .col(string(Entities::Etag))
                    .col(json_binary(Entities::Body))
                    .col(string_null(Entities::OwnerRef))
                    .col(string_null(Entities::Lifecycle))
                    .col(string_null(Entities::SpecType))
                    .col(string_null(Entities::SystemRef))
                    .col(string_null(Entities::Title))
                    .col(text(Entities::SearchText))
                    .col(string(Entities::Provider))
                    .col(string_null(Entities::LocationKey))
                    .col(json_binary_null(Entities::Errors))
                    .col(timestamp_with_time_zone(Entities::CreatedAt))
                    .col(timestamp_with_time_zone(Entities::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        // Typed columns serve the common filters; each index leads with the column
        // the filter pins and ends with the sort key so that a filtered, sorted page
        // is an index range scan.
        for (name, columns) in [
            ("idx_entities_kind_name", vec![Entities::Kind, Entities::Name]),
            ("idx_entities_owner", vec![Entities::OwnerRef, Entities::Name]),
            ("idx_entities_system", vec![Entities::SystemRef, Entities::Name]),
            ("idx_entities_lifecycle", vec![Entities::Lifecycle, Entities::Name]),
            ("idx_entities_type", vec![Entities::SpecType, Entities::Name]),
            ("idx_entities_namespace", vec![Entities::Namespace, Entities::Name]),
            ("idx_entities_name", vec![Entities::Name]),
            ("idx_entities_provider", vec![Entities::Provider, Entities::LocationKey]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Entities::Table);
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Relations::Table)
                    .col(big_pk_auto(Relations::Id))
                    .col(big_integer(Relations::OriginId))
                    .col(string(Relations::SourceRef))
                    .col(string(Relations::RelationType))
                    .col(string(Relations::TargetRef))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_relations_origin")
                            .from(Relations::Table, Relations::OriginId)
                            .to(Entities::Table, Entities::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("idx_relations_source", [Relations::SourceRef, Relations::RelationType, Relations::TargetRef]),
            ("idx_relations_target", [Relations::TargetRef, Relations::RelationType, Relations::SourceRef]),
        ] {
            let [first, second, third] = columns;
            manager
                .create_index(
                    Index::create().name(name).table(Relations::Table).col(first).col(second).col(third).to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_relations_origin")
                    .table(Relations::Table)
                    .col(Relations::OriginId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EntityFacets::Table)
                    .col(big_pk_auto(EntityFacets::Id))
                    .col(big_integer(EntityFacets::EntityId))
                    .col(string(EntityFacets::Key))
                    .col(string(EntityFacets::Value))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_entity_facets_entity")
                            .from(EntityFacets::Table, EntityFacets::EntityId)
                            .to(Entities::Table, Entities::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_entity_facets_key_value")
                    .table(EntityFacets::Table)
                    .col(EntityFacets::Key)
                    .col(EntityFacets::Value)
                    .col(EntityFacets::EntityId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_entity_facets_entity")
                    .table(EntityFacets::Table)
                    .col(EntityFacets::EntityId)
                    .col(EntityFacets::Key)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ChangeLog::Table)
                    .col(big_pk_auto(ChangeLog::Seq))
                    .col(timestamp_with_time_zone(ChangeLog::CreatedAt))
                    .col(string(ChangeLog::EntityRef))
                    .col(string(ChangeLog::ChangeType))
                    .col(string_null(ChangeLog::Etag))
                    .col(json_binary_null(ChangeLog::Body))
                    .col(string(ChangeLog::Provider))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_change_log_ref")
                    .table(ChangeLog::Table)
                    .col(ChangeLog::EntityRef)
                    .col(ChangeLog::Seq)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Locations::Table)
                    .col(big_pk_auto(Locations::Id))
                    .col(string(Locations::Provider))
                    .col(string(Locations::Target))
                    .col(text(Locations::Error).null())
                    .col(big_integer(Locations::NEntities))
                    .col(timestamp_with_time_zone(Locations::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_locations_provider_target")
                    .table(Locations::Table)
                    .col(Locations::Provider)
                    .col(Locations::Target)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Conflicts::Table)
                    .col(big_pk_auto(Conflicts::Id))
                    .col(string(Conflicts::EntityRef))
                    .col(string(Conflicts::OwnerProvider))
                    .col(string_null(Conflicts::OwnerLocation))
                    .col(string(Conflicts::ClaimantProvider))
                    .col(string_null(Conflicts::ClaimantLocation))
                    .col(timestamp_with_time_zone(Conflicts::DetectedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_conflicts_ref_claimant")
                    .table(Conflicts::Table)
                    .col(Conflicts::EntityRef)
                    .col(Conflicts::ClaimantProvider)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Conflicts::Table.into_iden(),
            Locations::Table.into_iden(),
            ChangeLog::Table.into_iden(),
            EntityFacets::Table.into_iden(),
            Relations::Table.into_iden(),
            Entities::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
