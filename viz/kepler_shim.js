// kepler.gl's browser bundle imports react/jsx-runtime, which React 18's browser build does not ship: a small stand-in
// (load before keplergl.min.js)
window["react/jsx-runtime"] = (function () {
  function jsx(type, props, key) {
    var p = Object.assign({}, props);
    if (key !== undefined) p.key = key;
    return React.createElement(type, p);
  }
  return {jsx: jsx, jsxs: jsx, Fragment: React.Fragment};
})();
window["maplibre-gl"] = window.maplibregl;
