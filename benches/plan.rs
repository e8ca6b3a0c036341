//! Criterion benchmark of the pure planner on 100,000 users (issue 6, target 4: under 100 ms).
//! Three shapes: an incremental run where nothing changed (the daemon's steady state), a full
//! run that also compares every Postman member, and a first run that creates everyone.
//! `cargo bench --bench plan`; never part of `cargo test`.

use std::collections::BTreeMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use okta_postman_sync::model::{
    DesiredUser, ManagedUser, OktaRead, OktaUserId, PostmanUser, ScimUserId, UserAttrs,
};
use okta_postman_sync::sync::users::plan::{plan, Carried, Policy};

const USERS: usize = 100_000;

fn attrs(i: usize) -> UserAttrs {
    UserAttrs {
        user_name: format!("first{i}.last{i}@example.com"),
        given_name: format!("First{i}"),
        family_name: format!("Last{i}"),
    }
}

fn okta_id(i: usize) -> OktaUserId {
    OktaUserId(format!("00u{i:017}"))
}

fn desired() -> OktaRead {
    let users = (0..USERS)
        .map(|i| {
            let d = DesiredUser {
                okta_id: okta_id(i),
                attrs: attrs(i),
                // ~3 % suspended, as `FakeOkta::populate` makes them.
                active: i % 33 != 0,
                reason: "app user ACTIVE, Okta user ACTIVE".to_string(),
            };
            (d.okta_id.clone(), d)
        })
        .collect();
    OktaRead {
        users,
        complete: true,
        ..OktaRead::default()
    }
}

fn converged(read: &OktaRead) -> (BTreeMap<OktaUserId, ManagedUser>, Vec<PostmanUser>) {
    let mut snapshot = BTreeMap::new();
    let mut members = Vec::with_capacity(read.users.len());
    for (i, d) in read.users.values().enumerate() {
        let scim_id = ScimUserId(format!("{i:032x}"));
        snapshot.insert(
            d.okta_id.clone(),
            ManagedUser {
                okta_id: d.okta_id.clone(),
                scim_id: scim_id.clone(),
                attrs: d.attrs.clone(),
                active: d.active,
            },
        );
        members.push(PostmanUser {
            id: scim_id,
            attrs: d.attrs.clone(),
            active: d.active,
            external_id: Some(d.okta_id.to_string()),
        });
    }
    (snapshot, members)
}

fn bench_plan(c: &mut Criterion) {
    let read = desired();
    let (snapshot, members) = converged(&read);
    let quarantined = Carried::default();
    let policy = Policy {
        max_deactivations: 1_000_000,
        allow_deactivations: None,
    };
    let mut g = c.benchmark_group("plan_100k");
    g.sample_size(20);
    g.bench_function("incremental_unchanged", |b| {
        b.iter(|| {
            let p = plan(
                black_box(&read),
                black_box(&snapshot),
                None,
                &quarantined,
                &policy,
            );
            assert!(p.operations.is_empty());
            p
        })
    });
    g.bench_function("full_unchanged", |b| {
        b.iter(|| {
            let p = plan(
                black_box(&read),
                black_box(&snapshot),
                Some(black_box(&members)),
                &quarantined,
                &policy,
            );
            assert!(p.operations.is_empty());
            p
        })
    });
    let empty = BTreeMap::new();
    g.bench_function("first_run_creates_all", |b| {
        b.iter(|| plan(black_box(&read), &empty, Some(&[]), &quarantined, &policy))
    });
    g.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
