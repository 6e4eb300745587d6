//! The store as the transport sees it: table memory as the transport's [`UploadMemory`] (a
//! `DoPut`'s bodies are received straight into the store's slabs, its buffered fields charged
//! to the store's budget), and a stored message as a [`ReplayMessage`] (a `DoGet` hands its
//! stored bodies to HTTP/2). The server joins the two layers here, so that the transport never
//! imports the store.

use bytes::Bytes;

use crate::error::Result;
use crate::store::budget::Charge;
use crate::store::slabs::{BodyFill, SlabWriter};
use crate::store::table::StoredMessage;
use crate::transport::receive::{BodySink, FieldCharge, UploadMemory};
use crate::transport::replay::ReplayMessage;

impl UploadMemory for SlabWriter {
    type Fill = BodyFill;
    type Charge = Charge;

    fn reserve_body(&mut self, len: usize) -> Result<BodyFill> {
        Ok(self.reserve(len)?)
    }

    fn finish_body(&mut self, fill: BodyFill) -> Bytes {
        self.finish_fill(fill)
    }

    fn field_charge(&self) -> Charge {
        let account = self.account();
        account.budget().empty_charge(Some(account))
    }
}

impl BodySink for BodyFill {
    fn remaining(&self) -> usize {
        BodyFill::remaining(self)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        Ok(BodyFill::write(self, bytes)?)
    }
}

impl FieldCharge for Charge {
    fn bytes(&self) -> usize {
        Charge::bytes(self)
    }

    fn resize(&self, bytes: usize) -> Result<()> {
        Ok(Charge::resize(self, bytes)?)
    }
}

impl From<StoredMessage> for ReplayMessage {
    fn from(message: StoredMessage) -> Self {
        ReplayMessage {
            header: message.header,
            app_metadata: message.app_metadata,
            body: message.body,
        }
    }
}
