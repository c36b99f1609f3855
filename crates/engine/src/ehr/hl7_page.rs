//! Applying a page of stored HL7 messages at once: every patient and appointment the
//! page names is read in two queries, the messages are applied in arrival order to
//! those records in memory (by the very rules of `apply.rs`), and what changed is
//! written with the events and each message's result in one transaction. Per message,
//! that is a few microseconds of work instead of a dozen round trips to the database.
//!
//! A page whose write is refused (someone changed one of its records meanwhile, or two
//! messages gave one identifier to two patients) is applied again one message at a
//! time, which settles each message on its own as before.

use super::apply::{
    Applied, ApplyContext, ApplyError, Outcome, RefCache, appointment_change, final_deletion,
    merge_patient_facts,
};
use super::hl7_map::{self, Mapped};
use crate::{Engine, EngineError};
use domain::ehr::{AppointmentAction, AppointmentFacts, PatientFacts};
use domain::{Appointment, AppointmentId, ExternalId, ExternalIdKind, OrgId, Patient, PatientId};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use store::{RecordEvent, RecordWrite};

/// The records a page touches, as the page has left them so far.
#[derive(Default)]
pub(crate) struct PageRecords {
    patients: HashMap<PatientId, Entry<Patient>>,
    patient_order: Vec<PatientId>,
    /// (organisation, authority, value) → the patients holding it (several may, under
    /// different type codes); a search by identifier finds the first by id.
    patient_keys: HashMap<(OrgId, String, String), BTreeSet<PatientId>>,
    appointments: HashMap<AppointmentId, Entry<Appointment>>,
    appointment_order: Vec<AppointmentId>,
    /// (organisation, kind, system, value) → appointment.
    appointment_keys: HashMap<(OrgId, ExternalIdKind, String, String), AppointmentId>,
    events: Vec<RecordEvent>,
    refs: RefCache,
}

struct Entry<T> {
    record: T,
    created: bool,
    changed: bool,
}

impl PageRecords {
    pub(crate) fn new() -> Self {
        PageRecords {
            refs: RefCache::for_page(),
            ..Default::default()
        }
    }

    /// Reads every patient and appointment that the mapped messages of one
    /// organisation may name.
    pub(crate) async fn load<'m>(
        engine: &Engine,
        org: OrgId,
        mapped: impl Iterator<Item = &'m Mapped>,
        into: &mut PageRecords,
    ) -> Result<(), EngineError> {
        let mut values = Vec::new();
        let mut appointment_ids: Vec<ExternalId> = Vec::new();
        for m in mapped {
            match m {
                Mapped::Patient(facts) => {
                    values.extend(facts.identifiers.iter().map(|i| i.value.clone()))
                }
                Mapped::Appointment(_, facts) => {
                    values.extend(facts.patient.identifiers.iter().map(|i| i.value.clone()));
                    appointment_ids.extend(facts.identifiers.iter().cloned());
                }
                Mapped::Merge(_) => {}
            }
        }
        values.sort();
        values.dedup();
        appointment_ids.sort_by(|a, b| {
            let key = |i: &ExternalId| {
                (
                    i.kind == ExternalIdKind::Filler,
                    i.system.clone(),
                    i.value.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        appointment_ids.dedup();
        if !values.is_empty() {
            for p in engine.store.patients_with_identifiers(org, &values).await? {
                into.add_patient(p, false);
            }
        }
        if !appointment_ids.is_empty() {
            for a in engine
                .store
                .appointments_with_identifiers(org, &appointment_ids)
                .await?
            {
                into.add_appointment(a, false);
            }
        }
        Ok(())
    }

    fn add_patient(&mut self, p: Patient, created: bool) {
        for i in &p.identifiers {
            self.patient_keys
                .entry((p.org_id, i.authority.clone(), i.value.clone()))
                .or_default()
                .insert(p.id);
        }
        if !self.patients.contains_key(&p.id) {
            self.patient_order.push(p.id);
        }
        self.patients.insert(
            p.id,
            Entry {
                record: p,
                created,
                changed: false,
            },
        );
    }

    fn add_appointment(&mut self, a: Appointment, created: bool) {
        for i in &a.identifiers {
            self.appointment_keys
                .entry((a.org_id, i.kind, i.system.clone(), i.value.clone()))
                .or_insert(a.id);
        }
        if !self.appointments.contains_key(&a.id) {
            self.appointment_order.push(a.id);
        }
        self.appointments.insert(
            a.id,
            Entry {
                record: a,
                created,
                changed: false,
            },
        );
    }

    /// As `Engine::upsert_patient`, on the page's records.
    fn upsert_patient(
        &mut self,
        engine: &Engine,
        ctx: &ApplyContext,
        facts: &PatientFacts,
        applied: &mut Applied,
    ) -> Result<Patient, ApplyError> {
        let org = ctx.org.id;
        let mrn = hl7_map::mrn(&facts.identifiers, &ctx.settings);
        let found = mrn
            .into_iter()
            .chain(facts.identifiers.iter().filter(|i| Some(*i) != mrn))
            .find_map(|i| {
                self.patient_keys
                    .get(&(org, i.authority.clone(), i.value.clone()))
                    .and_then(|holders| holders.first().copied())
            });
        let Some(id) = found else {
            let (patient, event) = engine.patient_created(ctx, facts)?;
            self.events.push(event);
            applied.patient_id = Some(patient.id);
            applied.events.push("patient.created".into());
            self.add_patient(patient.clone(), true);
            return Ok(patient);
        };
        let entry = self
            .patients
            .get_mut(&id)
            .expect("indexed patients are held");
        let mut patient = entry.record.clone();
        let changed = merge_patient_facts(&mut patient, facts);
        applied.patient_id = Some(id);
        if changed.is_empty() {
            return Ok(patient);
        }
        patient.updated_at = ctx.now;
        self.events.push(engine.event(
            ctx,
            "patient.changed",
            Some(id),
            None,
            json!({ "fields": changed }),
        ));
        applied.events.push("patient.changed".into());
        // Identifiers the change replaced no longer find this patient.
        for old in &entry.record.identifiers {
            if !patient
                .identifiers
                .iter()
                .any(|i| i.authority == old.authority && i.value == old.value)
                && let Some(holders) =
                    self.patient_keys
                        .get_mut(&(org, old.authority.clone(), old.value.clone()))
            {
                holders.remove(&id);
            }
        }
        entry.record = patient.clone();
        entry.changed = true;
        for i in &patient.identifiers {
            self.patient_keys
                .entry((org, i.authority.clone(), i.value.clone()))
                .or_default()
                .insert(id);
        }
        Ok(patient)
    }

    /// As `Engine::apply_appointment`, on the page's records.
    async fn apply_appointment(
        &mut self,
        engine: &Engine,
        ctx: &ApplyContext,
        action: AppointmentAction,
        facts: &AppointmentFacts,
        applied: &mut Applied,
    ) -> Result<(), ApplyError> {
        let patient = self.upsert_patient(engine, ctx, &facts.patient, applied)?;
        let org = ctx.org.id;
        let mut ids: Vec<_> = facts.identifiers.iter().collect();
        ids.sort_by_key(|i| i.kind != ExternalIdKind::Filler);
        let existing = ids
            .iter()
            .find_map(|i| {
                self.appointment_keys
                    .get(&(org, i.kind, i.system.clone(), i.value.clone()))
            })
            .and_then(|id| self.appointments.get(id))
            .map(|e| e.record.clone());
        if final_deletion(existing.as_ref(), applied).is_some() {
            return Ok(());
        }
        let refs = engine
            .resolve_refs(ctx, facts, existing.as_ref(), &mut self.refs, applied)
            .await?;
        let change = match appointment_change(
            ctx,
            Some(action),
            facts,
            &patient,
            existing,
            refs,
            applied,
        )? {
            Outcome::Unchanged(_) => return Ok(()),
            Outcome::Changed(change) => change,
        };
        self.events.push(engine.event(
            ctx,
            change.kind,
            Some(patient.id),
            Some(change.appointment.id),
            change.payload,
        ));
        applied.events.push(change.kind.into());
        let id = change.appointment.id;
        for i in &change.appointment.identifiers {
            self.appointment_keys
                .entry((org, i.kind, i.system.clone(), i.value.clone()))
                .or_insert(id);
        }
        match self.appointments.get_mut(&id) {
            Some(entry) => {
                entry.record = change.appointment;
                entry.changed = true;
            }
            None => self.add_appointment(change.appointment, change.created),
        }
        Ok(())
    }

    /// Applies one message's facts (not a merge) to the page's records.
    pub(crate) async fn apply(
        &mut self,
        engine: &Engine,
        ctx: &ApplyContext,
        mapped: &Mapped,
        applied: &mut Applied,
    ) -> Result<(), ApplyError> {
        match mapped {
            Mapped::Patient(facts) => {
                self.upsert_patient(engine, ctx, facts, applied)?;
            }
            Mapped::Appointment(action, facts) => {
                self.apply_appointment(engine, ctx, *action, facts, applied)
                    .await?;
            }
            Mapped::Merge(_) => unreachable!("merges are applied one at a time"),
        }
        Ok(())
    }

    /// What to write: each record once, as the page left it, with the version it was
    /// read at (so that a change made meanwhile elsewhere is refused), and the events.
    pub(crate) fn into_writes(self) -> (Vec<RecordWrite>, Vec<RecordEvent>) {
        let PageRecords {
            mut patients,
            patient_order,
            mut appointments,
            appointment_order,
            events,
            ..
        } = self;
        let mut writes = Vec::new();
        for id in patient_order {
            if let Some(e) = patients.remove(&id) {
                if e.created {
                    writes.push(RecordWrite::InsertPatient(e.record));
                } else if e.changed {
                    writes.push(RecordWrite::UpdatePatient(e.record));
                }
            }
        }
        for id in appointment_order {
            if let Some(e) = appointments.remove(&id) {
                if e.created {
                    writes.push(RecordWrite::InsertAppointment(e.record));
                } else if e.changed {
                    writes.push(RecordWrite::UpdateAppointment(e.record));
                }
            }
        }
        (writes, events)
    }
}
