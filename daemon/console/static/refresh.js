// Reload the page every 5 s while auto-refresh is on (the link in the footer).
setTimeout(function () { window.location.reload(); }, 5000);
