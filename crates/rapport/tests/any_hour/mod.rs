//! Test organisations send at any hour of the day the tests run: quiet hours have tests
//! of their own (`domain::send_window`), and with the default window (08:00–20:00 in the
//! patient's zone) tests on the system clock would fail every night.

pub async fn send_at_any_hour(store: &dyn store::Store, org: &mut domain::Organization) {
    org.messaging.send_windows.default =
        domain::SendWindow::new(jiff::civil::Time::MIN, jiff::civil::Time::MAX).unwrap();
    store::OrganizationStore::update_messaging_settings(store, org.id, &org.messaging)
        .await
        .unwrap();
}
