/** The spare cluster in the sidebar's envelope: pushed alone, or carried by a run list. */
import { isReply, ISpareCluster, Reply, spareAfter } from '../protocol';

const ready: ISpareCluster = {
  state: 'ready',
  text: 'spare cluster: 2 workers × 1 thread, ready · shuts down after 10 min idle'
};

test('a spare push is a reply, with a spare or null', () => {
  expect(isReply({ type: 'spare', request_id: null, spare: ready })).toBe(true);
  expect(isReply({ type: 'spare', request_id: null, spare: null })).toBe(true);
  expect(isReply({ type: 'spare', request_id: null })).toBe(false);
});

test('the spare follows pushes and run lists; other replies leave it', () => {
  const starting: ISpareCluster = { ...ready, state: 'starting' };
  let spare = spareAfter(null, {
    type: 'runs',
    request_id: null,
    runs: [],
    spare: starting
  });
  expect(spare).toEqual(starting);
  spare = spareAfter(spare, { type: 'spare', request_id: null, spare: ready });
  expect(spare).toEqual(ready);
  const defaults: Reply = { type: 'defaults', request_id: null, defaults: {} };
  expect(spareAfter(spare, defaults)).toEqual(ready);
  // a run list without a spare: there is none (taken by a cell, or shut down)
  expect(
    spareAfter(spare, { type: 'runs', request_id: 'r', runs: [] })
  ).toBeNull();
  expect(
    spareAfter(ready, { type: 'spare', request_id: null, spare: null })
  ).toBeNull();
});
