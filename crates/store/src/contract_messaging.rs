//! The messaging half of the store contract: dedupe keys, leased claims with fair share,
//! compare-and-set state changes (one at a time and in batches), idempotent inbound
//! messages, and the consent ledger.

use crate::contract::{organization, patient};
use crate::*;
use domain::ids::{ChannelId, ConsentEventId, InboundId, MessageId};
use domain::{OrgId, Organization};
use jiff::{SignedDuration, Timestamp};

#[macro_export]
macro_rules! messaging_contract_tests {
    ($make:path) => {
        $crate::messaging_contract_tests!(@each $make;
            dedupe_keys_make_one_message, claims_lease_due_messages_once_and_share_fairly,
            state_changes_are_compare_and_set, stuck_sending_messages_are_found_for_the_reconciler,
            inbound_messages_are_stored_once, consent_ledger_keeps_state_and_history,
            channels_round_trip, caps_count_messages_to_a_number,
            conversations_follow_activity_and_threads_merge_both_ways, media_is_kept_with_its_message,
            batched_state_changes_are_compare_and_set_per_row_and_commit_together,
            batched_reads_answer_for_many_numbers_at_once);
    };
    (@each $make:path; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                match $make().await {
                    Some(store) => $crate::contract_messaging::$name(&*store).await,
                    None => eprintln!("skipped: backend not configured"),
                }
            }
        )*
    };
}

fn now() -> Timestamp {
    Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap()
}

async fn org<S: Store + MessagingStore + ?Sized>(store: &S, slug: &str) -> Organization {
    let o = organization(slug);
    store.insert_organization(&o).await.unwrap();
    o
}

async fn channel_of<S: Store + MessagingStore + ?Sized>(store: &S, org: OrgId) -> Channel {
    let c = Channel {
        id: ChannelId::new(),
        org_id: org,
        kind: "twilio".into(),
        name: "Main number".into(),
        account_sid: format!("AC{}", "a".repeat(32)),
        auth_token_env: Some("TWILIO_AUTH_TOKEN".into()),
        auth_token_sealed: None,
        from_number: Some("+12015550100".into()),
        messaging_service_sid: None,
        api_base: "http://127.0.0.1:9".into(),
        settings: ChannelSettings::default(),
        created_at: now(),
    };
    store.insert_channel(&c).await.unwrap();
    c
}

pub fn message(
    org: OrgId,
    channel: Option<ChannelId>,
    to: &str,
    key: &str,
    not_before: Timestamp,
) -> OutboundMessage {
    OutboundMessage {
        id: MessageId::new(),
        org_id: org,
        channel_id: channel,
        patient_id: None,
        appointment_id: None,
        to: to.into(),
        kind: "reminder".into(),
        programme: "reminders".into(),
        body: "See you tomorrow at 9:00.".into(),
        segments: 1,
        dedupe_key: key.into(),
        state: "queued".into(),
        not_before,
        urgent: false,
        attempts: 0,
        provider_message_id: None,
        reason: None,
        error_code: None,
        created_at: now(),
        updated_at: now(),
        attempted_at: None,
    }
}

pub async fn dedupe_keys_make_one_message<S: Store + MessagingStore + ?Sized>(store: &S) {
    let o = org(store, "dedupe").await;
    let first = message(o.id, None, "+12015550123", "reminder:a:1", now());
    assert_eq!(
        store.enqueue(&first).await.unwrap(),
        Enqueued::Inserted(first.id)
    );
    let again = message(o.id, None, "+12015550123", "reminder:a:1", now());
    assert_eq!(
        store.enqueue(&again).await.unwrap(),
        Enqueued::Duplicate(first.id)
    );
    let other_org = org(store, "dedupe2").await;
    let theirs = message(other_org.id, None, "+12015550123", "reminder:a:1", now());
    assert_eq!(
        store.enqueue(&theirs).await.unwrap(),
        Enqueued::Inserted(theirs.id),
        "keys are per organisation"
    );
    assert_eq!(store.outbound(o.id, first.id).await.unwrap(), first);
    assert!(matches!(
        store.outbound(other_org.id, first.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn claims_lease_due_messages_once_and_share_fairly<S: Store + MessagingStore + ?Sized>(
    store: &S,
) {
    let big = org(store, "big").await;
    let small = org(store, "small").await;
    let t0 = now();
    for i in 0..10 {
        store
            .enqueue(&message(
                big.id,
                None,
                "+12015550123",
                &format!("b{i}"),
                t0 - SignedDuration::from_secs(60),
            ))
            .await
            .unwrap();
    }
    let small_msg = message(small.id, None, "+12015550124", "s0", t0);
    store.enqueue(&small_msg).await.unwrap();
    let later = message(
        small.id,
        None,
        "+12015550124",
        "s1",
        t0 + SignedDuration::from_secs(3600),
    );
    store.enqueue(&later).await.unwrap();

    let lease = t0 + SignedDuration::from_secs(30);
    let first = store.claim_due(t0, 4, 3, "node-a", lease).await.unwrap();
    assert_eq!(first.len(), 4);
    assert!(
        first.iter().any(|m| m.id == small_msg.id),
        "the small organisation gets its turn"
    );
    assert_eq!(
        first.iter().filter(|m| m.org_id == big.id).count(),
        3,
        "at most per_org from one organisation"
    );
    let second = store
        .claim_due(t0, 100, 100, "node-b", lease)
        .await
        .unwrap();
    assert_eq!(
        second.len(),
        7,
        "leased rows are not claimed twice; the future one waits"
    );
    assert!(second.iter().all(|m| !first.iter().any(|f| f.id == m.id)));
    assert!(
        store
            .claim_due(t0, 100, 100, "node-c", lease)
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store
        .claim_due(
            lease + SignedDuration::from_secs(1),
            100,
            100,
            "node-c",
            lease + SignedDuration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        expired.len(),
        11,
        "expired leases are claimable again; the future message still waits"
    );
}

pub async fn state_changes_are_compare_and_set<S: Store + MessagingStore + ?Sized>(store: &S) {
    let o = org(store, "cas").await;
    let m = message(o.id, None, "+12015550123", "k", now());
    store.enqueue(&m).await.unwrap();
    let mut to_sending = StateChange::new(m.id, "queued", "sending", now());
    to_sending.count_attempt = true;
    assert!(store.change_state(&to_sending).await.unwrap());
    assert!(
        !store.change_state(&to_sending).await.unwrap(),
        "a second claim of the same move fails"
    );
    let mut sent = StateChange::new(m.id, "sending", "sent", now());
    sent.provider_message_id = Some("SM0123".into());
    assert!(store.change_state(&sent).await.unwrap());
    let back = store.outbound(o.id, m.id).await.unwrap();
    assert_eq!(
        (
            back.state.as_str(),
            back.attempts,
            back.provider_message_id.as_deref()
        ),
        ("sent", 1, Some("SM0123"))
    );
    assert!(back.attempted_at.is_some());
    assert_eq!(
        store.outbound_by_provider_id("SM0123").await.unwrap().id,
        m.id
    );
    let mut retry = StateChange::new(m.id, "sent", "queued", now());
    retry.not_before = Some(now() + SignedDuration::from_secs(60));
    retry.reason = Some("waiting for the send window".into());
    assert!(store.change_state(&retry).await.unwrap());
    let back = store.outbound(o.id, m.id).await.unwrap();
    assert_eq!(back.reason.as_deref(), Some("waiting for the send window"));
    assert!(back.not_before > now());
}

pub async fn stuck_sending_messages_are_found_for_the_reconciler<
    S: Store + MessagingStore + ?Sized,
>(
    store: &S,
) {
    let o = org(store, "stuck").await;
    let m = message(o.id, None, "+12015550123", "k", now());
    store.enqueue(&m).await.unwrap();
    let t = now();
    let mut c = StateChange::new(m.id, "queued", "sending", t);
    c.count_attempt = true;
    store.change_state(&c).await.unwrap();
    assert!(store.stuck_sending(t, 10).await.unwrap().is_empty());
    let stuck = store
        .stuck_sending(t + SignedDuration::from_secs(1), 10)
        .await
        .unwrap();
    assert_eq!(stuck.iter().map(|m| m.id).collect::<Vec<_>>(), [m.id]);
}

pub async fn inbound_messages_are_stored_once<S: Store + MessagingStore + ?Sized>(store: &S) {
    let o = org(store, "inb").await;
    let c = channel_of(store, o.id).await;
    let m = InboundMessage {
        id: InboundId::new(),
        org_id: o.id,
        channel_id: c.id,
        provider_message_id: "SMabc".into(),
        from: "+12015550123".into(),
        to: "+12015550100".into(),
        body: "C".into(),
        details: serde_json::json!({"NumMedia": "0"}),
        received_at: now(),
        processed_at: None,
        outcome: None,
    };
    assert_eq!(
        store.insert_inbound(&m).await.unwrap(),
        Received::Inserted(m.id)
    );
    let retry = InboundMessage {
        id: InboundId::new(),
        ..m.clone()
    };
    assert_eq!(
        store.insert_inbound(&retry).await.unwrap(),
        Received::Duplicate(m.id)
    );
    assert_eq!(
        store.unprocessed_inbound(10).await.unwrap(),
        vec![m.clone()]
    );
    store
        .mark_inbound_processed(m.id, "inbox", now())
        .await
        .unwrap();
    assert!(store.unprocessed_inbound(10).await.unwrap().is_empty());
    let page = store
        .inbound_from(o.id, "+12015550123", &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items[0].outcome.as_deref(), Some("inbox"));

    // A group commit: new ones, one stored before, and one twice in the same group; each
    // row comes back as it was given, with every field.
    let fresh = |sid: &str| InboundMessage {
        id: InboundId::new(),
        provider_message_id: sid.into(),
        body: format!("Body of {sid} – ñ"),
        details: serde_json::json!({"NumMedia": "1", "MediaUrl0": "https://x.example/m"}),
        ..m.clone()
    };
    let (a, b) = (fresh("SMgroupA"), fresh("SMgroupB"));
    let a_again = InboundMessage {
        id: InboundId::new(),
        ..a.clone()
    };
    let results = store
        .insert_inbounds(&[a.clone(), retry.clone(), b.clone(), a_again])
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![
            Received::Inserted(a.id),
            Received::Duplicate(m.id),
            Received::Inserted(b.id),
            Received::Duplicate(a.id),
        ]
    );
    assert_eq!(
        store.unprocessed_inbound(10).await.unwrap(),
        vec![a.clone(), b.clone()],
        "stored once each, as given"
    );

    // A routed page, recorded together: the conversations' activity and flags, the marks.
    let routed = |m: &InboundMessage, outcome: &str, attention: Option<&str>| RoutedInbound {
        id: m.id,
        org_id: m.org_id,
        phone: m.from.clone(),
        received_at: m.received_at,
        needs_team: attention.is_some(),
        attention: attention.map(str::to_owned),
        outcome: outcome.into(),
        events: Vec::new(),
        processed_at: now(),
    };
    store
        .finish_inbound(&[
            routed(&a, "help", None),
            routed(&b, "inbox:possible_opt_out", Some("possible opt-out")),
        ])
        .await
        .unwrap();
    assert!(store.unprocessed_inbound(10).await.unwrap().is_empty());
    let page = store
        .inbound_from(o.id, "+12015550123", &PageRequest::default())
        .await
        .unwrap();
    let outcomes: Vec<Option<&str>> = page.items.iter().map(|i| i.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("inbox"), Some("help"), Some("inbox:possible_opt_out")]
    );
    let open = store
        .conversations(o.id, Some("open"), &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(open.items.len(), 1, "the number's one conversation is open");
    assert_eq!(open.items[0].attention.as_deref(), Some("possible opt-out"));
}

pub async fn consent_ledger_keeps_state_and_history<S: Store + MessagingStore + ?Sized>(store: &S) {
    let o = org(store, "consent").await;
    let event = |status: &str, scope: &str, source: &str| ConsentEvent {
        id: ConsentEventId::new(),
        org_id: o.id,
        phone: "+12015550123".into(),
        scope: scope.into(),
        status: status.into(),
        source: source.into(),
        actor: Some("STOP".into()),
        inbound_id: None,
        recorded_at: now(),
    };
    store
        .record_consent(&event("opted_out", "organization", "patient_keyword"))
        .await
        .unwrap();
    store
        .record_consent(&event("opted_out", "programme:surveys", "staff"))
        .await
        .unwrap();
    store
        .record_consent(&event("opted_in", "organization", "patient_keyword"))
        .await
        .unwrap();
    let state = store.consent_state(o.id, "+12015550123").await.unwrap();
    assert_eq!(
        state,
        [
            ("organization".to_string(), "opted_in".to_string()),
            ("programme:surveys".into(), "opted_out".into())
        ]
    );
    let history = store.consent_history(o.id, "+12015550123").await.unwrap();
    assert_eq!(
        history
            .iter()
            .map(|e| e.status.as_str())
            .collect::<Vec<_>>(),
        ["opted_out", "opted_out", "opted_in"]
    );
    assert_eq!(history[1].source, "staff");
    let other = org(store, "consent2").await;
    assert!(
        store
            .consent_state(other.id, "+12015550123")
            .await
            .unwrap()
            .is_empty(),
        "per organisation"
    );
}

pub async fn channels_round_trip<S: Store + MessagingStore + ?Sized>(store: &S) {
    let o = org(store, "chan").await;
    let mut c = channel_of(store, o.id).await;
    assert_eq!(store.channel(c.id).await.unwrap(), c);
    c.settings.segments_per_second = 25.0;
    c.settings.daily_cap = 2000;
    store.update_channel(&c).await.unwrap();
    assert_eq!(store.channels(o.id).await.unwrap(), vec![c]);
}

pub async fn caps_count_messages_to_a_number<S: Store + MessagingStore + ?Sized>(store: &S) {
    let o = org(store, "caps").await;
    let p = patient(&o, "Ana", "Lee", "201-555-0123", "C1");
    store.insert_patient(&p).await.unwrap();
    let c = channel_of(store, o.id).await;
    let t = now();
    let mut a = message(o.id, Some(c.id), "+12015550123", "a", t);
    a.patient_id = Some(p.id);
    store.enqueue(&a).await.unwrap();
    let mut b = message(o.id, Some(c.id), "+12015550123", "b", t);
    b.state = "suppressed".into();
    store.enqueue(&b).await.unwrap();
    let (since, until) = (
        t - SignedDuration::from_hours(24),
        t + SignedDuration::from_secs(10),
    );
    let counted = store
        .sent_to_number(o.id, "+12015550123", since, until)
        .await
        .unwrap();
    assert!(
        counted.is_empty(),
        "nothing has been handed to the provider yet"
    );
    let pending = store.pending_to_number(o.id, "+12015550123").await.unwrap();
    assert_eq!(
        pending.iter().map(|m| m.id).collect::<Vec<_>>(),
        [a.id],
        "suppressed messages are not pending"
    );
    let page = store
        .outbound_for_patient(o.id, p.id, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|m| m.id).collect::<Vec<_>>(), [a.id]);
    let mut go = StateChange::new(a.id, "queued", "sending", t);
    go.count_attempt = true;
    store.change_state(&go).await.unwrap();
    assert_eq!(
        store
            .sent_by_channel(c.id, t - SignedDuration::from_secs(1))
            .await
            .unwrap(),
        1
    );
    let counted = store
        .sent_to_number(o.id, "+12015550123", since, until)
        .await
        .unwrap();
    assert_eq!(
        counted,
        [(t, "reminder".to_string())],
        "a message handed to the provider counts"
    );
}

pub async fn conversations_follow_activity_and_threads_merge_both_ways<
    S: Store + MessagingStore + ?Sized,
>(
    store: &S,
) {
    let o = org(store, "conv").await;
    let c = channel_of(store, o.id).await;
    let t0 = now();
    let out = message(o.id, Some(c.id), "+12015550123", "o1", t0);
    store.enqueue(&out).await.unwrap();
    let first = store
        .touch_conversation(o.id, "+12015550123", t0, false, None)
        .await
        .unwrap();
    assert_eq!(
        (first.status.as_str(), first.attention.as_deref()),
        ("closed", None),
        "our own text needs no one"
    );
    let t1 = t0 + SignedDuration::from_secs(60);
    let reply = InboundMessage {
        id: InboundId::new(),
        org_id: o.id,
        channel_id: c.id,
        provider_message_id: "SMconv".into(),
        from: "+12015550123".into(),
        to: "+12015550100".into(),
        body: "Cancel my appointment tomorrow".into(),
        details: serde_json::json!({}),
        received_at: t1,
        processed_at: None,
        outcome: None,
    };
    store.insert_inbound(&reply).await.unwrap();
    let open = store
        .touch_conversation(o.id, "+12015550123", t1, true, Some("possible opt-out"))
        .await
        .unwrap();
    assert_eq!(open.id, first.id, "one conversation per number");
    assert_eq!(
        (
            open.status.as_str(),
            open.attention.as_deref(),
            open.last_message_at
        ),
        ("open", Some("possible opt-out"), t1)
    );
    let older = store
        .touch_conversation(o.id, "+12015550123", t0, false, None)
        .await
        .unwrap();
    assert_eq!(
        (older.status.as_str(), older.last_message_at),
        ("open", t1),
        "late news never rewinds it"
    );
    let other = store
        .touch_conversation(o.id, "+12015550999", t0, true, None)
        .await
        .unwrap();
    let list = store
        .conversations(o.id, Some("open"), &PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!(
        list.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        [open.id],
        "newest first"
    );
    let rest = store
        .conversations(
            o.id,
            Some("open"),
            &PageRequest::after(1, list.next.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        [other.id]
    );
    let thread = store.thread(o.id, "+12015550123", 50).await.unwrap();
    assert!(
        matches!(&thread[..], [ThreadItem::Outbound(a), ThreadItem::Inbound(b)] if a.id == out.id && b.id == reply.id),
        "{thread:?}"
    );
    store
        .set_conversation_status(o.id, open.id, "closed")
        .await
        .unwrap();
    let closed = store.conversation(o.id, open.id).await.unwrap();
    assert_eq!((closed.status.as_str(), closed.attention), ("closed", None));
    let stranger = org(store, "conv2").await;
    assert!(matches!(
        store.conversation(stranger.id, open.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .thread(stranger.id, "+12015550123", 50)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn media_is_kept_with_its_message<S: Store + MessagingStore + ?Sized>(store: &S) {
    let o = org(store, "media").await;
    let c = channel_of(store, o.id).await;
    let m = InboundMessage {
        id: InboundId::new(),
        org_id: o.id,
        channel_id: c.id,
        provider_message_id: "MMmedia".into(),
        from: "+12015550123".into(),
        to: "+12015550100".into(),
        body: "My insurance card".into(),
        details: serde_json::json!({"NumMedia": "2"}),
        received_at: now(),
        processed_at: None,
        outcome: None,
    };
    store.insert_inbound(&m).await.unwrap();
    let card = InboundMedia {
        id: domain::ids::MediaId::new(),
        org_id: o.id,
        inbound_id: m.id,
        position: 1,
        content_type: "image/jpeg".into(),
        data: vec![0xFF, 0xD8, 0xFF, 0x00, 0x01],
        fetched_at: now(),
    };
    store.insert_media(&card).await.unwrap();
    let again = InboundMedia {
        id: domain::ids::MediaId::new(),
        data: vec![1, 2, 3],
        ..card.clone()
    };
    store.insert_media(&again).await.unwrap();
    assert_eq!(
        store.media(o.id, card.id).await.unwrap(),
        card,
        "bytes kept exactly; a second fetch changes nothing"
    );
    assert_eq!(
        store.media_of(o.id, m.id).await.unwrap(),
        vec![(card.id, 1, "image/jpeg".to_string(), 5)]
    );
    let other = org(store, "media2").await;
    assert!(matches!(
        store.media(other.id, card.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.media_of(other.id, m.id).await.unwrap().is_empty());
}

pub async fn batched_state_changes_are_compare_and_set_per_row_and_commit_together<
    S: Store + MessagingStore + ?Sized,
>(
    store: &S,
) {
    let o = org(store, "batch").await;
    let c = channel_of(store, o.id).await;
    let t = now();
    let ms: Vec<OutboundMessage> = (0..4)
        .map(|i| message(o.id, None, &format!("+1201555012{i}"), &format!("k{i}"), t))
        .collect();
    for m in &ms {
        store.enqueue(m).await.unwrap();
    }
    assert!(store.change_states(&[]).await.unwrap().is_empty());
    // Message 2 moved meanwhile (an opt-out suppressed it).
    let mut gone = StateChange::new(ms[2].id, "queued", "suppressed", t);
    gone.reason = Some("the number opted out".into());
    assert!(store.change_state(&gone).await.unwrap());

    let attempt = |m: &OutboundMessage, from: &str| {
        let mut a = StateChange::new(m.id, from, "sending", t);
        a.count_attempt = true;
        a.channel_id = Some(c.id);
        a.reason = Some(String::new());
        a
    };
    let answers = store
        .change_states(&[
            attempt(&ms[0], "queued"),
            attempt(&ms[1], "queued"),
            attempt(&ms[2], "queued"),
            attempt(&ms[3], "sent"),
        ])
        .await
        .unwrap();
    assert_eq!(
        answers,
        [true, true, false, false],
        "each row compared on its own"
    );
    for (m, state, attempts) in [
        (&ms[0], "sending", 1),
        (&ms[1], "sending", 1),
        (&ms[2], "suppressed", 0),
        (&ms[3], "queued", 0),
    ] {
        let back = store.outbound(o.id, m.id).await.unwrap();
        assert_eq!((back.state.as_str(), back.attempts), (state, attempts));
        assert_eq!(back.attempted_at.is_some(), attempts == 1);
        assert_eq!(back.channel_id.is_some(), attempts == 1);
    }
    assert_eq!(
        store
            .outbound(o.id, ms[2].id)
            .await
            .unwrap()
            .reason
            .as_deref(),
        Some("the number opted out"),
        "a change that did not apply wrote nothing"
    );
    assert_eq!(store.sent_by_channel(c.id, t).await.unwrap(), 2);

    // Results: one sent (touching its conversation), one retried; a conversation that was
    // open for the care team stays open with its note.
    let open = store
        .touch_conversation(o.id, &ms[1].to, t, true, Some("possible opt-out"))
        .await
        .unwrap();
    let later = t + SignedDuration::from_secs(5);
    let mut sent = StateChange::new(ms[0].id, "sending", "sent", later);
    sent.provider_message_id = Some("SMbatch0".into());
    sent.touch_conversation = true;
    let mut sent1 = StateChange::new(ms[1].id, "sending", "sent", later);
    sent1.provider_message_id = Some("SMbatch1".into());
    sent1.touch_conversation = true;
    let mut retry = StateChange::new(ms[3].id, "queued", "queued", later);
    retry.not_before = Some(later + SignedDuration::from_secs(60));
    retry.reason = Some("attempt 1 failed; retrying".into());
    retry.error_code = Some(20429);
    assert_eq!(
        store.change_states(&[sent, sent1, retry]).await.unwrap(),
        [true, true, true]
    );
    let back = store.outbound(o.id, ms[0].id).await.unwrap();
    assert_eq!(
        (
            back.state.as_str(),
            back.provider_message_id.as_deref(),
            back.attempts,
            back.reason.as_deref()
        ),
        ("sent", Some("SMbatch0"), 1, Some("")),
        "fields a change leaves out keep their values"
    );
    assert_eq!(back.updated_at, later);
    let back = store.outbound(o.id, ms[3].id).await.unwrap();
    assert_eq!(
        (back.error_code, back.not_before, back.attempts),
        (Some(20429), later + SignedDuration::from_secs(60), 0)
    );
    let convs = store
        .conversations(o.id, None, &PageRequest::default())
        .await
        .unwrap();
    let by_phone = |phone: &str| convs.items.iter().find(|c| c.phone == phone).cloned();
    let first = by_phone(&ms[0].to).expect("a sent message opens its conversation");
    assert_eq!(
        (first.status.as_str(), first.last_message_at),
        ("closed", later)
    );
    let second = by_phone(&ms[1].to).unwrap();
    assert_eq!(second.id, open.id);
    assert_eq!(
        (
            second.status.as_str(),
            second.attention.as_deref(),
            second.last_message_at
        ),
        ("open", Some("possible opt-out"), later)
    );
    assert!(by_phone(&ms[3].to).is_none(), "only changes that ask touch");

    // The same row twice in one batch: the second change sees the first.
    let mut d1 = StateChange::new(ms[0].id, "sent", "delivered", later);
    d1.reason = Some("first".into());
    let d2 = StateChange::new(ms[0].id, "delivered", "undelivered", later);
    let d3 = StateChange::new(ms[0].id, "sent", "failed", later);
    assert_eq!(
        store.change_states(&[d1, d2, d3]).await.unwrap(),
        [true, true, false]
    );
    assert_eq!(
        store.outbound(o.id, ms[0].id).await.unwrap().state,
        "undelivered"
    );

    // All or nothing: a change the database refuses (a channel that does not exist) takes
    // the whole batch with it.
    let fresh = message(o.id, None, "+12015550199", "k-fresh", t);
    store.enqueue(&fresh).await.unwrap();
    let mut bad = attempt(&fresh, "queued");
    bad.channel_id = Some(ChannelId::new());
    let good = StateChange::new(ms[3].id, "queued", "cancelled", later);
    assert!(store.change_states(&[good, bad]).await.is_err());
    assert_eq!(
        store.outbound(o.id, ms[3].id).await.unwrap().state,
        "queued"
    );
    assert_eq!(
        store.outbound(o.id, fresh.id).await.unwrap().state,
        "queued"
    );
}

pub async fn batched_reads_answer_for_many_numbers_at_once<S: Store + MessagingStore + ?Sized>(
    store: &S,
) {
    let o = org(store, "batchread").await;
    let other = org(store, "batchread2").await;
    let t = now();
    let numbers: Vec<String> = (0..3).map(|i| format!("+1201555013{i}")).collect();
    // Two sent to the first number, one to the second, one pending to the third, and one
    // to the first number in another organisation.
    let mut sent = Vec::new();
    for (i, to) in [&numbers[0], &numbers[0], &numbers[1]]
        .into_iter()
        .enumerate()
    {
        let mut m = message(o.id, None, to, &format!("s{i}"), t);
        m.kind = if i == 1 { "survey" } else { "reminder" }.into();
        store.enqueue(&m).await.unwrap();
        sent.push(m);
    }
    store
        .enqueue(&message(o.id, None, &numbers[2], "pending", t))
        .await
        .unwrap();
    let theirs = message(other.id, None, &numbers[0], "s0", t);
    store.enqueue(&theirs).await.unwrap();
    let mut changes: Vec<StateChange> = sent
        .iter()
        .chain([&theirs])
        .map(|m| {
            let mut c = StateChange::new(m.id, "queued", "sending", t);
            c.count_attempt = true;
            c
        })
        .collect();
    changes[2].at = t + SignedDuration::from_secs(1);
    assert!(
        store
            .change_states(&changes)
            .await
            .unwrap()
            .iter()
            .all(|a| *a)
    );
    let (since, until) = (
        t - SignedDuration::from_hours(1),
        t + SignedDuration::from_secs(10),
    );
    let mut counted = store
        .sent_to_numbers(o.id, &numbers, since, until)
        .await
        .unwrap();
    counted.sort();
    assert_eq!(
        counted,
        [
            (numbers[0].clone(), t, "reminder".to_string()),
            (numbers[0].clone(), t, "survey".to_string()),
            (
                numbers[1].clone(),
                t + SignedDuration::from_secs(1),
                "reminder".to_string()
            ),
        ]
    );
    for n in &numbers {
        let mut one: Vec<(Timestamp, String)> = counted
            .iter()
            .filter(|(to, _, _)| to == n)
            .map(|(_, at, k)| (*at, k.clone()))
            .collect();
        let mut single = store.sent_to_number(o.id, n, since, until).await.unwrap();
        one.sort();
        single.sort();
        assert_eq!(one, single, "the same as asking number by number");
    }
    assert!(
        store
            .sent_to_numbers(o.id, &numbers, t + SignedDuration::from_secs(2), until)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .sent_to_numbers(o.id, &[], since, until)
            .await
            .unwrap()
            .is_empty()
    );

    let record = |org: OrgId, phone: &str, scope: &str, status: &str| ConsentEvent {
        id: ConsentEventId::new(),
        org_id: org,
        phone: phone.into(),
        scope: scope.into(),
        status: status.into(),
        source: "staff".into(),
        actor: None,
        inbound_id: None,
        recorded_at: now(),
    };
    for e in [
        record(o.id, &numbers[0], "organization", "opted_out"),
        record(o.id, &numbers[0], "programme:surveys", "opted_out"),
        record(o.id, &numbers[0], "organization", "opted_in"),
        record(o.id, &numbers[2], "programme:reminders", "opted_out"),
        record(other.id, &numbers[1], "organization", "opted_out"),
    ] {
        store.record_consent(&e).await.unwrap();
    }
    let mut consent = store.consent_of_numbers(o.id, &numbers).await.unwrap();
    consent.sort();
    let row =
        |n: &String, scope: &str, status: &str| (n.clone(), scope.to_string(), status.to_string());
    assert_eq!(
        consent,
        [
            row(&numbers[0], "organization", "opted_in"),
            row(&numbers[0], "programme:surveys", "opted_out"),
            row(&numbers[2], "programme:reminders", "opted_out"),
        ],
        "current state only, this organisation only"
    );

    let keys: Vec<String> = ["s0", "s2", "pending", "nope"]
        .iter()
        .map(|k| k.to_string())
        .collect();
    let mut taken = store.dedupe_keys_taken(o.id, &keys).await.unwrap();
    taken.sort();
    assert_eq!(taken, ["pending", "s0", "s2"]);
    assert!(
        store
            .dedupe_keys_taken(other.id, &["s2".to_string()])
            .await
            .unwrap()
            .is_empty()
    );

    assert!(
        store
            .take_early_statuses_of(&["SMnone".to_string()])
            .await
            .unwrap()
            .is_empty()
    );
    store
        .save_early_status("SMb", "sent", None, now())
        .await
        .unwrap();
    store
        .save_early_status("SMa", "delivered", None, now())
        .await
        .unwrap();
    store
        .save_early_status("SMb", "undelivered", Some(30003), now())
        .await
        .unwrap();
    store
        .save_early_status("SMc", "sent", None, now())
        .await
        .unwrap();
    let taken = store
        .take_early_statuses_of(&["SMb".to_string(), "SMa".to_string(), "SMz".to_string()])
        .await
        .unwrap();
    assert_eq!(
        taken,
        [
            ("SMb".to_string(), "sent".to_string(), None),
            ("SMa".to_string(), "delivered".to_string(), None),
            ("SMb".to_string(), "undelivered".to_string(), Some(30003)),
        ],
        "oldest first"
    );
    assert!(
        store
            .take_early_statuses_of(&["SMa".to_string(), "SMb".to_string()])
            .await
            .unwrap()
            .is_empty(),
        "taken once"
    );
    assert_eq!(
        store.take_early_statuses("SMc").await.unwrap(),
        [("sent".to_string(), None)],
        "others are left"
    );
}
