//! Applies EHR facts (from HL7, FHIR or CSV alike) to the stored records, writing each
//! change together with an event that says what changed and from which message.
//!
//! The rules (docs/ehr-integration.md): a patient is found by the interface's MRN rule,
//! else by any identifier it carries; an appointment by its filler id (with namespace),
//! else its placer id, within the organisation whichever application sent it; each
//! message's status applies in arrival order, except that a deletion (S17,
//! `entered-in-error`) is final; a change to an unknown appointment creates it.

use crate::{Engine, EngineError};
use domain::ehr::{
    AppointmentAction, AppointmentFacts, PatientFacts, ResourceRef, Update, Warning, When,
};
use domain::interface::InterfaceSettings;
use domain::{
    Appointment, AppointmentId, AppointmentStatus, ConfirmationState, EventId, ExternalIdKind,
    LocationId, OrgId, Organization, Patient, PatientId, PatientIdentifier, Provider, ProviderId,
    ProviderIdentifier, ZoneName,
};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::HashMap;
use store::{EventSource, PageRequest, PatientQuery, RecordEvent, RecordWrite, StoreError};

/// Where facts come from and how to read them.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    pub org: Organization,
    pub source: EventSource,
    /// The MRN rule, location codes and phone rules (FHIR and CSV use the defaults plus
    /// the organisation's phone region).
    pub settings: InterfaceSettings,
    pub now: Timestamp,
}

/// What applying one set of facts did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub patient_id: Option<PatientId>,
    pub appointment_id: Option<AppointmentId>,
    /// Event kinds written (none when nothing changed).
    pub events: Vec<String>,
    pub warnings: Vec<Warning>,
}

impl Applied {
    pub fn to_json(&self) -> Value {
        json!({
            "patient_id": self.patient_id,
            "appointment_id": self.appointment_id,
            "events": self.events,
            "warnings": self.warnings,
        })
    }
}

/// Why facts could not be applied: a reason a person can act on, without PHI.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Engine(EngineError::Store(e))
    }
}

const RETRIES: usize = 3;

impl Engine {
    /// The patient these identifiers name: by the MRN rule first, then any identifier.
    pub async fn find_patient(
        &self,
        org: &Organization,
        identifiers: &[PatientIdentifier],
        settings: &InterfaceSettings,
    ) -> Result<Option<Patient>, EngineError> {
        let mrn = super::hl7_map::mrn(identifiers, settings);
        let ordered = mrn
            .into_iter()
            .chain(identifiers.iter().filter(|i| Some(*i) != mrn));
        for id in ordered {
            let query = PatientQuery {
                identifier: Some(id.value.clone()),
                identifier_authority: Some(id.authority.clone()),
                ..Default::default()
            };
            let page = self
                .store
                .search_patients(org.id, &query, &PageRequest::first(2))
                .await?;
            if let Some(p) = page.items.into_iter().next() {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Creates or updates the patient the facts describe.
    pub async fn upsert_patient(
        &self,
        ctx: &ApplyContext,
        facts: &PatientFacts,
        applied: &mut Applied,
    ) -> Result<Patient, ApplyError> {
        for attempt in 0..RETRIES {
            let existing = self
                .find_patient(&ctx.org, &facts.identifiers, &ctx.settings)
                .await?;
            let result = match existing {
                Some(current) => self.update_patient_from(ctx, current, facts, applied).await,
                None => self.create_patient_from(ctx, facts, applied).await,
            };
            match result {
                Err(ApplyError::Engine(EngineError::Store(
                    StoreError::VersionMismatch | StoreError::Conflict { .. },
                ))) if attempt + 1 < RETRIES => continue,
                other => return other,
            }
        }
        unreachable!("the last attempt returns")
    }

    pub async fn create_patient_from(
        &self,
        ctx: &ApplyContext,
        facts: &PatientFacts,
        applied: &mut Applied,
    ) -> Result<Patient, ApplyError> {
        let (patient, event) = self.patient_created(ctx, facts)?;
        self.store
            .write_with_events(&[RecordWrite::InsertPatient(patient.clone())], &[event])
            .await?;
        applied.patient_id = Some(patient.id);
        applied.events.push("patient.created".into());
        Ok(patient)
    }

    pub async fn update_patient_from(
        &self,
        ctx: &ApplyContext,
        current: Patient,
        facts: &PatientFacts,
        applied: &mut Applied,
    ) -> Result<Patient, ApplyError> {
        let mut patient = current.clone();
        let changed = merge_patient_facts(&mut patient, facts);
        applied.patient_id = Some(patient.id);
        if changed.is_empty() {
            return Ok(current);
        }
        patient.updated_at = ctx.now;
        let event = self.event(
            ctx,
            "patient.changed",
            Some(patient.id),
            None,
            json!({ "fields": changed }),
        );
        self.store
            .write_with_events(&[RecordWrite::UpdatePatient(patient.clone())], &[event])
            .await?;
        patient.version += 1;
        applied.events.push("patient.changed".into());
        Ok(patient)
    }

    /// Applies appointment facts: finds or creates the patient and the appointment.
    pub async fn apply_appointment(
        &self,
        ctx: &ApplyContext,
        action: Option<AppointmentAction>,
        facts: &AppointmentFacts,
        applied: &mut Applied,
    ) -> Result<Appointment, ApplyError> {
        let patient = self.upsert_patient(ctx, &facts.patient, applied).await?;
        for attempt in 0..RETRIES {
            match self
                .apply_appointment_once(ctx, action, facts, &patient, applied)
                .await
            {
                Err(ApplyError::Engine(EngineError::Store(
                    StoreError::VersionMismatch | StoreError::Conflict { .. },
                ))) if attempt + 1 < RETRIES => continue,
                other => return other,
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn find_appointment(
        &self,
        ctx: &ApplyContext,
        facts: &AppointmentFacts,
    ) -> Result<Option<Appointment>, EngineError> {
        let mut ids: Vec<_> = facts.identifiers.iter().collect();
        ids.sort_by_key(|i| i.kind != ExternalIdKind::Filler);
        for id in ids {
            match self
                .store
                .appointment_by_identifier(ctx.org.id, id.kind, &id.system, &id.value)
                .await
            {
                Ok(a) => return Ok(Some(a)),
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    async fn apply_appointment_once(
        &self,
        ctx: &ApplyContext,
        action: Option<AppointmentAction>,
        facts: &AppointmentFacts,
        patient: &Patient,
        applied: &mut Applied,
    ) -> Result<Appointment, ApplyError> {
        let existing = self.find_appointment(ctx, facts).await?;
        self.apply_appointment_with(ctx, action, facts, patient, existing, applied)
            .await
    }

    /// Applies facts to `existing` (or creates the appointment when `None`) for `patient`.
    pub async fn apply_appointment_with(
        &self,
        ctx: &ApplyContext,
        action: Option<AppointmentAction>,
        facts: &AppointmentFacts,
        patient: &Patient,
        existing: Option<Appointment>,
        applied: &mut Applied,
    ) -> Result<Appointment, ApplyError> {
        if let Some(deleted) = final_deletion(existing.as_ref(), applied) {
            return Ok(deleted);
        }
        let refs = self
            .resolve_refs(
                ctx,
                facts,
                existing.as_ref(),
                &mut RefCache::default(),
                applied,
            )
            .await?;
        let AppointmentChange {
            mut appointment,
            created,
            kind,
            payload,
        } = match appointment_change(ctx, action, facts, patient, existing, refs, applied)? {
            Outcome::Unchanged(current) => return Ok(current),
            Outcome::Changed(change) => change,
        };
        let event = self.event(ctx, kind, Some(patient.id), Some(appointment.id), payload);
        let write = if created {
            RecordWrite::InsertAppointment(appointment.clone())
        } else {
            RecordWrite::UpdateAppointment(appointment.clone())
        };
        self.store.write_with_events(&[write], &[event]).await?;
        if !created {
            appointment.version += 1;
        }
        applied.events.push(kind.into());
        Ok(appointment)
    }

    /// The location, its time zone and the provider the facts name (keeping the
    /// existing appointment's where the facts name none), through `cache`.
    pub(crate) async fn resolve_refs(
        &self,
        ctx: &ApplyContext,
        facts: &AppointmentFacts,
        existing: Option<&Appointment>,
        cache: &mut RefCache,
        applied: &mut Applied,
    ) -> Result<Refs, EngineError> {
        let location_id = match &facts.location {
            Some(loc) => match self.resolve_location(ctx, loc).await? {
                Some(id) => Some(id),
                None => {
                    applied.warnings.push(Warning::new(
                        "location",
                        "location code not mapped to a Rapport location; the organisation's time zone applies",
                    ));
                    existing.and_then(|a| a.location_id)
                }
            },
            None => existing.and_then(|a| a.location_id),
        };
        let zone: ZoneName = match location_id {
            Some(id) => match cache.zones.get(&id) {
                Some(z) => z.clone().unwrap_or_else(|| ctx.org.time_zone.clone()),
                None => match self.store.location(ctx.org.id, id).await {
                    Ok(l) => {
                        cache.zones.insert(id, Some(l.time_zone.clone()));
                        l.time_zone
                    }
                    Err(StoreError::NotFound) => {
                        cache.zones.insert(id, None);
                        ctx.org.time_zone.clone()
                    }
                    Err(e) => return Err(e.into()),
                },
            },
            None => ctx.org.time_zone.clone(),
        };
        let provider_id = match &facts.provider {
            Some(p) => Some(self.resolve_provider(ctx, p, cache).await?),
            None => existing.and_then(|a| a.provider_id),
        };
        Ok(Refs {
            location_id,
            zone,
            provider_id,
        })
    }

    async fn resolve_location(
        &self,
        ctx: &ApplyContext,
        loc: &ResourceRef,
    ) -> Result<Option<LocationId>, EngineError> {
        let map = &ctx.settings.locations;
        let point = loc.code.split('^').next().unwrap_or_default();
        if let Some(id) = map.get(&loc.code).or_else(|| map.get(point)) {
            return Ok(Some(*id));
        }
        // A FHIR reference names the location itself.
        if let Ok(id) = loc.code.parse::<LocationId>() {
            match self.store.location(ctx.org.id, id).await {
                Ok(l) => return Ok(Some(l.id)),
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// The provider the EHR names, created on first sight (the EHR is the source of
    /// truth for who works where). The organisation's providers are read once per cache.
    async fn resolve_provider(
        &self,
        ctx: &ApplyContext,
        p: &ResourceRef,
        cache: &mut RefCache,
    ) -> Result<ProviderId, EngineError> {
        if let Ok(id) = p.code.parse::<ProviderId>()
            && let Ok(found) = self.store.provider(ctx.org.id, id).await
        {
            return Ok(found.id);
        }
        let system = p.system.clone().unwrap_or_else(|| "ehr".to_owned());
        let matches = |pr: &Provider| {
            pr.identifiers
                .iter()
                .any(|i| i.value == p.code && (i.system == system || p.system.is_none()))
        };
        if !cache.keep_providers {
            // One message: read the providers until this one turns up.
            let mut page = PageRequest::first(200);
            loop {
                let providers = self.store.providers(ctx.org.id, &page).await?;
                if let Some(found) = providers.items.iter().find(|pr| matches(pr)) {
                    return Ok(found.id);
                }
                match providers.next {
                    Some(c) => page = PageRequest::after(200, c),
                    None => break,
                }
            }
        } else {
            // A page of messages: read them all once.
            let known = match cache.providers.entry(ctx.org.id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let mut all = Vec::new();
                    let mut page = PageRequest::first(200);
                    loop {
                        let providers = self.store.providers(ctx.org.id, &page).await?;
                        all.extend(providers.items);
                        match providers.next {
                            Some(c) => page = PageRequest::after(200, c),
                            None => break,
                        }
                    }
                    e.insert(all)
                }
            };
            if let Some(found) = known.iter().find(|pr| matches(pr)) {
                return Ok(found.id);
            }
        }
        let provider = Provider {
            id: ProviderId::new(),
            org_id: ctx.org.id,
            display_name: p.display.clone().unwrap_or_else(|| p.code.clone()),
            identifiers: vec![ProviderIdentifier {
                system,
                value: p.code.clone(),
            }],
            active: true,
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        self.store.insert_provider(&provider).await?;
        if let Some(known) = cache.providers.get_mut(&ctx.org.id) {
            known.push(provider.clone());
        }
        Ok(provider.id)
    }

    /// Applies an A40 pair: the prior record merges into the survivor.
    pub async fn merge_patient(
        &self,
        ctx: &ApplyContext,
        survivor_facts: &PatientFacts,
        prior: &[PatientIdentifier],
        applied: &mut Applied,
    ) -> Result<(), ApplyError> {
        let survivor = self
            .find_patient(&ctx.org, &survivor_facts.identifiers, &ctx.settings)
            .await?;
        let loser = self.find_patient(&ctx.org, prior, &ctx.settings).await?;
        match (survivor, loser) {
            (Some(s), Some(l)) if s.id == l.id => {
                self.update_patient_from(ctx, s, survivor_facts, applied)
                    .await?;
            }
            (Some(s), Some(l)) => {
                let mut merged = s.clone();
                merge_patient_facts(&mut merged, survivor_facts);
                // The person's other numbers and identifiers come along: consent is
                // kept per number, so an opt-out on the prior record's number still holds.
                for phone in &l.phones {
                    if !merged
                        .phones
                        .iter()
                        .any(|p| p.raw == phone.raw || (p.e164.is_some() && p.e164 == phone.e164))
                    {
                        merged.phones.push(phone.clone());
                    }
                }
                for id in &l.identifiers {
                    if !merged.identifiers.contains(id) {
                        merged.identifiers.push(id.clone());
                    }
                }
                if merged.birth_date.is_none() {
                    merged.birth_date = l.birth_date;
                }
                if merged.email.is_none() {
                    merged.email = l.email.clone();
                }
                merged.updated_at = ctx.now;
                let event = self.event(
                    ctx,
                    "patient.merged",
                    Some(s.id),
                    None,
                    json!({ "merged": l.id, "survivor": s.id }),
                );
                self.store
                    .merge_patients(ctx.org.id, &merged, l.id, &[event])
                    .await?;
                applied.patient_id = Some(s.id);
                applied.events.push("patient.merged".into());
            }
            (None, Some(l)) => {
                // Only the prior record exists: it takes the surviving identity.
                self.update_patient_from(ctx, l, survivor_facts, applied)
                    .await?;
            }
            (Some(s), None) => {
                applied.warnings.push(Warning::new(
                    "MRG-1",
                    "the prior patient is not known to Rapport; nothing to merge",
                ));
                self.update_patient_from(ctx, s, survivor_facts, applied)
                    .await?;
            }
            (None, None) => {
                applied.warnings.push(Warning::new(
                    "MRG-1",
                    "the prior patient is not known to Rapport; nothing to merge",
                ));
                self.create_patient_from(ctx, survivor_facts, applied)
                    .await?;
            }
        }
        Ok(())
    }

    /// A new patient made of the facts, and its `patient.created` event.
    pub(crate) fn patient_created(
        &self,
        ctx: &ApplyContext,
        facts: &PatientFacts,
    ) -> Result<(Patient, RecordEvent), ApplyError> {
        if !facts.identifies_someone() {
            return Err(ApplyError::Invalid {
                field: "patient".into(),
                message: "a patient needs a name or an identifier".into(),
            });
        }
        let mut patient = new_patient(ctx);
        let changed = merge_patient_facts(&mut patient, facts);
        let event = self.event(
            ctx,
            "patient.created",
            Some(patient.id),
            None,
            json!({ "fields": changed }),
        );
        Ok((patient, event))
    }

    pub(crate) fn event(
        &self,
        ctx: &ApplyContext,
        kind: &str,
        patient: Option<PatientId>,
        appointment: Option<AppointmentId>,
        changes: Value,
    ) -> RecordEvent {
        RecordEvent {
            id: EventId::new(),
            org_id: ctx.org.id,
            kind: kind.to_owned(),
            patient_id: patient,
            appointment_id: appointment,
            source: ctx.source.clone(),
            changes,
            at: ctx.now,
        }
    }
}

/// Where an appointment is and who sees the patient, as resolved for one message.
pub(crate) struct Refs {
    pub location_id: Option<LocationId>,
    pub zone: ZoneName,
    pub provider_id: Option<ProviderId>,
}

/// Locations' time zones and organisations' providers already read (for one message,
/// or for a page of HL7 messages).
#[derive(Default)]
pub(crate) struct RefCache {
    zones: HashMap<LocationId, Option<ZoneName>>,
    /// Whether to read an organisation's providers whole and keep them (a page), rather
    /// than page through them until the one sought turns up (one message).
    keep_providers: bool,
    providers: HashMap<OrgId, Vec<Provider>>,
}

impl RefCache {
    /// For a page of messages: providers are read once, whole.
    pub(crate) fn for_page() -> Self {
        RefCache {
            keep_providers: true,
            ..Default::default()
        }
    }
}

/// What facts do to an appointment.
pub(crate) enum Outcome {
    Unchanged(Appointment),
    Changed(AppointmentChange),
}

pub(crate) struct AppointmentChange {
    /// As it is to be written (its version still the one read, for the check).
    pub appointment: Appointment,
    pub created: bool,
    pub kind: &'static str,
    pub payload: Value,
}

/// A deleted (entered-in-error) appointment stays deleted: a deletion is final.
pub(crate) fn final_deletion(
    existing: Option<&Appointment>,
    applied: &mut Applied,
) -> Option<Appointment> {
    let current = existing.filter(|a| a.status == AppointmentStatus::EnteredInError)?;
    applied.appointment_id = Some(current.id);
    applied.warnings.push(Warning::new(
        "appointment",
        "the appointment was deleted (entered-in-error); a deletion is final, so this change was not applied",
    ));
    Some(current.clone())
}

/// Applies facts to `existing` (or a new appointment) for `patient`, in memory.
pub(crate) fn appointment_change(
    ctx: &ApplyContext,
    action: Option<AppointmentAction>,
    facts: &AppointmentFacts,
    patient: &Patient,
    existing: Option<Appointment>,
    refs: Refs,
    applied: &mut Applied,
) -> Result<Outcome, ApplyError> {
    let Refs {
        location_id,
        zone,
        provider_id,
    } = refs;
    let tz = zone.time_zone();
    let instant = |w: When| -> Option<Timestamp> {
        match w {
            When::Instant(t) => Some(t),
            When::Local(dt) => dt.to_zoned(tz.clone()).ok().map(|z| z.timestamp()),
        }
    };
    let start = facts.start.clone().map(instant);
    let end = facts.end.clone().map(instant);
    let flat = |u: Update<Option<Timestamp>>| match u {
        Update::Set(Some(t)) => Update::Set(t),
        Update::Set(None) | Update::Clear => Update::Clear,
        Update::Keep => Update::Keep,
    };
    let (start, end) = (flat(start), flat(end));
    let created = existing.is_none();
    let mut appointment = match existing {
        Some(a) => a,
        None => Appointment {
            id: AppointmentId::new(),
            org_id: ctx.org.id,
            identifiers: Vec::new(),
            patient_id: patient.id,
            provider_id: None,
            location_id: None,
            start: None,
            end: None,
            time_zone: zone.clone(),
            appointment_type: None,
            status: facts
                .status
                .or_else(|| action.and_then(AppointmentAction::implied_status))
                .unwrap_or(AppointmentStatus::Booked),
            confirmation: ConfirmationState::default(),
            created_at: ctx.now,
            updated_at: ctx.now,
            version: 1,
        },
    };
    let before = appointment.clone();
    for id in &facts.identifiers {
        if !appointment.identifiers.contains(id) {
            appointment.identifiers.push(id.clone());
        }
    }
    appointment.patient_id = patient.id;
    appointment.location_id = location_id;
    appointment.provider_id = provider_id;
    appointment.time_zone = zone;
    appointment.start = start.apply(appointment.start);
    appointment.end = end.apply(appointment.end);
    if let Some(status) = facts.status {
        appointment.status = status;
    }
    appointment.appointment_type = facts
        .appointment_type
        .clone()
        .apply(appointment.appointment_type);
    if appointment.start.is_none() && !appointment.status.may_lack_start() {
        return Err(ApplyError::Invalid {
            field: "start".into(),
            message: format!(
                "a {} appointment needs a start time and none was given",
                appointment.status.as_str()
            ),
        });
    }
    if let (Some(s), Some(e)) = (appointment.start, appointment.end)
        && e < s
    {
        applied.warnings.push(Warning::new(
            "end",
            "the end is before the start; end ignored",
        ));
        appointment.end = None;
    }

    let changes = appointment_changes(&before, &appointment, created);
    applied.appointment_id = Some(appointment.id);
    if !created && changes.as_object().is_some_and(|c| c.is_empty()) {
        return Ok(Outcome::Unchanged(before));
    }
    appointment.updated_at = ctx.now;
    let kind = appointment_event_kind((!created).then_some(&before), &appointment);
    let mut payload = json!({ "changes": changes, "status": appointment.status.as_str() });
    if let Some(a) = action {
        payload["trigger"] = json!(a.as_str());
    }
    Ok(Outcome::Changed(AppointmentChange {
        appointment,
        created,
        kind,
        payload,
    }))
}

/// An empty patient of the context's organisation, to apply facts to.
pub fn new_patient(ctx: &ApplyContext) -> Patient {
    Patient {
        id: PatientId::new(),
        org_id: ctx.org.id,
        identifiers: Vec::new(),
        names: Vec::new(),
        birth_date: None,
        sex: None,
        preferred_language: None,
        addresses: Vec::new(),
        time_zone: None,
        usual_location_id: None,
        email: None,
        phones: Vec::new(),
        contacts: Vec::new(),
        created_at: ctx.now,
        updated_at: ctx.now,
        version: 1,
        merged_into: None,
    }
}

/// Applies facts to a patient; returns the names of the fields that changed.
pub fn merge_patient_facts(patient: &mut Patient, facts: &PatientFacts) -> Vec<&'static str> {
    let mut changed = Vec::new();
    for id in &facts.identifiers {
        let same_slot = patient
            .identifiers
            .iter()
            .position(|i| i.authority == id.authority && i.type_code == id.type_code);
        match same_slot {
            Some(i) if patient.identifiers[i] == *id => {}
            // One MRN per authority and type: a new value replaces the old.
            Some(i) => {
                patient.identifiers[i] = id.clone();
                push(&mut changed, "identifiers");
            }
            None => {
                patient.identifiers.push(id.clone());
                push(&mut changed, "identifiers");
            }
        }
    }
    macro_rules! field {
        ($name:literal, $update:expr, $slot:expr) => {{
            let next = $update.clone().apply($slot.clone());
            if next != $slot {
                $slot = next;
                push(&mut changed, $name);
            }
        }};
    }
    macro_rules! list {
        ($name:literal, $update:expr, $slot:expr) => {{
            let next = $update
                .clone()
                .apply(Some($slot.clone()))
                .unwrap_or_default();
            if next != $slot {
                $slot = next;
                push(&mut changed, $name);
            }
        }};
    }
    list!("names", facts.names, patient.names);
    field!("birth_date", facts.birth_date, patient.birth_date);
    field!("sex", facts.sex, patient.sex);
    field!(
        "preferred_language",
        facts.preferred_language,
        patient.preferred_language
    );
    list!("addresses", facts.addresses, patient.addresses);
    field!("email", facts.email, patient.email);
    list!("phones", facts.phones, patient.phones);
    list!("contacts", facts.contacts, patient.contacts);
    changed
}

fn push(changed: &mut Vec<&'static str>, name: &'static str) {
    if !changed.contains(&name) {
        changed.push(name);
    }
}

/// The event a change to an appointment is: created, cancelled, no-show, deleted,
/// rescheduled, status changed, or changed.
pub fn appointment_event_kind(before: Option<&Appointment>, after: &Appointment) -> &'static str {
    match before {
        None => "appointment.created",
        Some(b) if b.status != after.status => match after.status {
            AppointmentStatus::Cancelled => "appointment.cancelled",
            AppointmentStatus::Noshow => "appointment.no_show",
            AppointmentStatus::EnteredInError => "appointment.deleted",
            _ if b.start != after.start => "appointment.rescheduled",
            _ => "appointment.status_changed",
        },
        Some(b) if b.start != after.start => "appointment.rescheduled",
        Some(b)
            if b.confirmation != after.confirmation
                && after.confirmation == ConfirmationState::Confirmed =>
        {
            "appointment.confirmed"
        }
        Some(_) => "appointment.changed",
    }
}

/// The event recording a change made through the REST API (source `api`, the token's
/// name as reference); `None` when nothing changed.
pub fn api_appointment_event(
    before: Option<&Appointment>,
    after: &Appointment,
    actor: &str,
    at: Timestamp,
) -> Option<RecordEvent> {
    let changes = appointment_changes(before.unwrap_or(after), after, before.is_none());
    if before.is_some() && changes.as_object().is_some_and(|c| c.is_empty()) {
        return None;
    }
    Some(RecordEvent {
        id: EventId::new(),
        org_id: after.org_id,
        kind: appointment_event_kind(before, after).to_owned(),
        patient_id: Some(after.patient_id),
        appointment_id: Some(after.id),
        source: EventSource {
            kind: "api".into(),
            reference: Some(actor.to_owned()),
        },
        changes: json!({ "changes": changes, "status": after.status.as_str() }),
        at,
    })
}

fn appointment_changes(before: &Appointment, after: &Appointment, created: bool) -> Value {
    let mut changes = serde_json::Map::new();
    let mut diff = |name: &str, a: Value, b: Value| {
        if a != b || created {
            changes.insert(
                name.to_owned(),
                json!({ "from": if created { Value::Null } else { a }, "to": b }),
            );
        }
    };
    diff("start", json!(before.start), json!(after.start));
    diff("end", json!(before.end), json!(after.end));
    diff("status", json!(before.status), json!(after.status));
    diff(
        "location_id",
        json!(before.location_id),
        json!(after.location_id),
    );
    diff(
        "provider_id",
        json!(before.provider_id),
        json!(after.provider_id),
    );
    diff(
        "patient_id",
        json!(before.patient_id),
        json!(after.patient_id),
    );
    diff(
        "appointment_type",
        json!(before.appointment_type),
        json!(after.appointment_type),
    );
    diff(
        "confirmation",
        json!(before.confirmation),
        json!(after.confirmation),
    );
    if before.identifiers != after.identifiers && !created {
        changes.insert(
            "identifiers".into(),
            json!({ "from": before.identifiers, "to": after.identifiers }),
        );
    }
    Value::Object(changes)
}
