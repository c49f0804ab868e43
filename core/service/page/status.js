// The status page's buttons: replay a dead letter, pause or resume an
// instance, back-fill an instance. Every POST carries X-Hookd-Admin, which a
// form on another site cannot send.
(function () {
  'use strict';
  var message = document.getElementById('message');

  function post(url, body) {
    return fetch(url, {
      method: 'POST',
      headers: {'X-Hookd-Admin': '1', 'Content-Type': 'application/x-www-form-urlencoded'},
      credentials: 'same-origin',
      body: body || ''
    }).then(function (r) {
      return r.text().then(function (t) { return {ok: r.ok, status: r.status, text: t}; });
    });
  }

  function failed(b, what) {
    return function (err) {
      message.textContent = what + ' failed: ' + err;
      b.disabled = false;
    };
  }

  function replayDead(b) {
    var id = b.dataset.id;
    post('/dead-letters/' + encodeURIComponent(id) + '/replay').then(function (r) {
      if (r.ok) {
        message.textContent = 'Replayed dead letter ' + id + '.';
        b.closest('tr').classList.add('replayed');
        b.textContent = 'Replayed';
      } else {
        message.textContent = 'Replay of ' + id + ' failed: ' + r.status + ' ' + r.text;
        b.disabled = false;
      }
    }).catch(failed(b, 'Replay'));
  }

  function pauseResume(b, action) {
    var name = b.dataset.instance;
    post('/instances/' + encodeURIComponent(name) + '/' + action).then(function (r) {
      if (!r.ok) {
        message.textContent = action + ' of ' + name + ' failed: ' + r.status + ' ' + r.text;
        b.disabled = false;
        return;
      }
      var paused = action === 'pause';
      message.textContent = (paused ? 'Paused ' : 'Resumed ') + name + '.';
      var state = b.closest('tr').querySelector('.state');
      state.textContent = paused ? 'paused' : 'ok';
      state.className = 'state state-' + (paused ? 'paused' : 'ok');
      b.dataset.action = paused ? 'resume' : 'pause';
      b.textContent = paused ? 'Resume' : 'Pause';
      b.disabled = false;
    }).catch(failed(b, action));
  }

  function backfill(b) {
    var name = b.dataset.instance;
    var since = b.closest('td').querySelector('input.since').value;
    post('/instances/' + encodeURIComponent(name) + '/replay',
         'since=' + encodeURIComponent(since)).then(function (r) {
      if (!r.ok) {
        message.textContent = 'Replay to ' + name + ' failed: ' + r.status + ' ' + r.text;
      } else {
        var j = JSON.parse(r.text);
        message.textContent = 'Replaying ' + j.events + ' event(s) of the last ' + since +
            ' to ' + name + ' (back-fill ' + j.backfill + ').';
      }
      b.disabled = false;
    }).catch(failed(b, 'Replay'));
  }

  document.addEventListener('click', function (e) {
    var b = e.target.closest('button[data-action]');
    if (!b) return;
    b.disabled = true;
    var action = b.dataset.action;
    if (action === 'replay-dead') replayDead(b);
    else if (action === 'pause' || action === 'resume') pauseResume(b, action);
    else if (action === 'backfill') backfill(b);
  });
})();
