// Filters the dispatch table's rows by the text typed (op name, type, reason, schemes).
document.getElementById("dispatch-filter").addEventListener("input", (event) => {
  const wanted = event.target.value.toLowerCase();
  for (const row of document.querySelectorAll("#dispatch-table tbody tr")) {
    row.hidden = wanted !== "" && !row.textContent.toLowerCase().includes(wanted);
  }
});
