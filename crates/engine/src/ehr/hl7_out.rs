//! HL7 back to the EHR: SIU^S14 (a patient confirmed) and SIU^S15 (a cancellation made
//! in Rapport), sent over MLLP, one message per connection exchange, with the EHR's
//! acknowledgment deciding what happens next: `AA`/`CA` delivered; `AE`/`CE`, a timeout
//! or a broken connection retried with backoff; `AR`/`CR` refused for good (alert).

use super::deliveries::Attempt;
use domain::interface::OutboundHl7;
use domain::{Appointment, ConfirmationState, ExternalIdKind, Patient};
use futures_util::{SinkExt, StreamExt};
use hl7::Message;
use hl7::ack::AckCode;
use hl7::build::MessageWriter;
use hl7::mllp::MllpCodec;
use std::time::Duration;
use store::{Hl7Interface, RecordEvent};
use tokio_util::codec::Framed;

/// The SIU message for an event.
pub fn siu(
    interface: &Hl7Interface,
    outbound: &OutboundHl7,
    trigger: &str,
    appointment: &Appointment,
    patient: &Patient,
    event: &RecordEvent,
) -> String {
    let at = event.at.strftime("%Y%m%d%H%M%S+0000").to_string();
    // MSH-10 from the event id: a retry of the same delivery carries the same control id,
    // so the EHR can recognise it.
    let control: String = event.id.0.simple().to_string()[..20].to_owned();
    let mut w = MessageWriter::new();
    w.segment("MSH")
        .field(3, &["RAPPORT"])
        .field(4, &["RAPPORT"])
        .field(
            5,
            &[outbound
                .receiving_application
                .as_deref()
                .or(interface.sending_application.as_deref())
                .unwrap_or("")],
        )
        .field(
            6,
            &[outbound
                .receiving_facility
                .as_deref()
                .or(interface.sending_facility.as_deref())
                .unwrap_or("")],
        )
        .field(7, &[&at])
        .field(9, &["SIU", trigger, "SIU_S12"])
        .field(10, &[&control])
        .field(11, &["P"])
        .field(12, &["2.5.1"]);
    let id_of = |kind: ExternalIdKind| {
        appointment
            .identifiers
            .iter()
            .find(|i| i.kind == kind)
            .map(|i| (i.value.as_str(), i.system.as_str()))
    };
    let (status, reason) = match trigger {
        "S15" => ("Cancelled", "Cancelled by patient"),
        _ => (
            "Booked",
            match appointment.confirmation {
                ConfirmationState::Confirmed => "Confirmed by patient",
                _ => "Confirmation status changed",
            },
        ),
    };
    w.segment("SCH");
    if let Some((v, s)) = id_of(ExternalIdKind::Placer) {
        w.field(1, &[v, s]);
    }
    if let Some((v, s)) = id_of(ExternalIdKind::Filler) {
        w.field(2, &[v, s]);
    }
    w.field(6, &["", reason]);
    if let Some(start) = appointment.start {
        let start = start.strftime("%Y%m%d%H%M%S+0000").to_string();
        w.field(11, &["", "", "", &start]);
    }
    w.field(25, &[status]);
    w.segment("PID").field(1, &["1"]);
    let ids: Vec<[&str; 5]> = patient
        .identifiers
        .iter()
        .map(|i| {
            [
                i.value.as_str(),
                "",
                "",
                i.authority.as_str(),
                i.type_code.as_str(),
            ]
        })
        .collect();
    let reps: Vec<&[&str]> = ids.iter().map(|a| &a[..]).collect();
    w.field_repeated(3, &reps);
    w.segment("RGS").field(1, &["1"]);
    w.finish()
}

/// Sends one message and reads the acknowledgment.
pub async fn send(address: &str, message: &str, timeout: Duration) -> Attempt {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|_| "the EHR's MLLP listener could not be reached".to_owned())?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, MllpCodec::new());
        framed
            .send(message.as_bytes())
            .await
            .map_err(|_| "the message could not be written".to_owned())?;
        match framed.next().await {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(e)) => Err(format!("the reply could not be read: {e}")),
            None => Err("the EHR closed the connection without a reply".to_owned()),
        }
    };
    let reply = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Attempt::Retry(format!("no acknowledgment within {} s", timeout.as_secs()));
        }
        Ok(Err(why)) => return Attempt::Retry(why),
        Ok(Ok(reply)) => reply,
    };
    let Ok(parsed) = Message::parse(&reply) else {
        return Attempt::Retry("the reply is not an HL7 message".into());
    };
    let Some(ack) = hl7::ack::read(&parsed) else {
        return Attempt::Retry("the reply has no MSA acknowledgment code".into());
    };
    let detail = ack
        .error_text()
        .map(|t| format!(": {t}"))
        .unwrap_or_default();
    match ack.code {
        AckCode::AA | AckCode::CA => Attempt::Done,
        AckCode::AE | AckCode::CE => {
            Attempt::Retry(format!("the EHR answered {}{detail}", ack.code.as_str()))
        }
        AckCode::AR | AckCode::CR => {
            Attempt::Refused(format!("the EHR answered {}{detail}", ack.code.as_str()))
        }
    }
}
