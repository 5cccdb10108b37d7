// A record processor on aws-kcl's documented API (the npm package ships no samples): it
// appends what it gets to $EVENTS as JSON lines, and checkpoints each batch at its last
// record's sequence number, as the aws-kcl sample does. Its first checkpoint is at a bogus
// sequence number, to see the daemon's error come back through the callback.
'use strict';

const fs = require('fs');
const kcl = require('aws-kcl');

const EVENTS = process.env.EVENTS;

function event(fields) {
  fields.pid = process.pid;
  fields.t = Date.now() / 1000;
  fs.appendFileSync(EVENTS, JSON.stringify(fields) + '\n');
}

function recordProcessor() {
  let shardId;
  let triedBogus = false;
  return {
    initialize: function (initializeInput, completeCallback) {
      shardId = initializeInput.shardId;
      event({ shard: shardId, action: 'initialize', sequenceNumber: initializeInput.sequenceNumber });
      completeCallback();
    },

    processRecords: function (processRecordsInput, completeCallback) {
      const records = processRecordsInput.records;
      event({
        shard: shardId,
        action: 'processRecords',
        keys: records.map((r) => r.partitionKey),
        data: records.map((r) => Buffer.from(r.data, 'base64').toString()),
      });
      if (records.length === 0) {
        completeCallback();
        return;
      }
      const last = records[records.length - 1].sequenceNumber;
      const checkpointer = processRecordsInput.checkpointer;
      const checkpointLast = function () {
        checkpointer.checkpoint(last, function (err, sequenceNumber) {
          event({ shard: shardId, action: 'checkpointReply', reply: { error: err || null, sequenceNumber: sequenceNumber } });
          completeCallback();
        });
      };
      if (!triedBogus) {
        triedBogus = true;
        checkpointer.checkpoint('bogus', function (err) {
          event({ shard: shardId, action: 'bogusCheckpointReply', reply: { error: err || null } });
          checkpointLast();
        });
      } else {
        checkpointLast();
      }
    },

    leaseLost: function (leaseLostInput, completeCallback) {
      event({ shard: shardId, action: 'leaseLost' });
      completeCallback();
    },

    shardEnded: function (shardEndedInput, completeCallback) {
      event({ shard: shardId, action: 'shardEnded' });
      shardEndedInput.checkpointer.checkpoint(function (err) {
        event({ shard: shardId, action: 'checkpointReply', reply: { error: err || null } });
        completeCallback();
      });
    },

    shutdownRequested: function (shutdownRequestedInput, completeCallback) {
      event({ shard: shardId, action: 'shutdownRequested' });
      shutdownRequestedInput.checkpointer.checkpoint(function (err) {
        event({ shard: shardId, action: 'checkpointReply', reply: { error: err || null } });
        completeCallback();
      });
    },
  };
}

kcl(recordProcessor()).run();
