// A kepler.gl map in an element (citylakeMount) and a citylake map payload shown on it (citylakeShow): used by the map
// pages `citylake map` writes and by the web app `citylake serve` serves. window.citylakeReady turns true once the
// payload's layers are added and the view holds where the data is.
window.citylakeMount = function (element) {
  var reducers = Redux.combineReducers({keplerGl: KeplerGl.keplerGlReducer.initialState({
    mapStyle: {styleType: "no_map"},
    uiState: {readOnly: false, currentModal: null, mapControls: {mapLegend: {show: true, active: true}}}})});
  var store = Redux.createStore(reducers, {}, Redux.applyMiddleware.apply(null, KeplerGl.enhanceReduxMiddleware([])));
  window.citylakeStore = store;
  function measure() { return {width: element.clientWidth, height: element.clientHeight}; }
  function App() {
    var size = React.useState(measure());
    React.useEffect(function () {
      var resize = function () { size[1](measure()); };
      window.addEventListener("resize", resize);
      return function () { window.removeEventListener("resize", resize); };
    }, []);
    return React.createElement(KeplerGl.KeplerGl, {id: "map", width: size[0].width, height: size[0].height, mapboxApiAccessToken: ""});
  }
  ReactDOM.createRoot(element).render(React.createElement(ReactRedux.Provider, {store: store}, React.createElement(App)));
  return store;
};

window.citylakeShow = function (store, map) {
  window.citylakeReady = false;
  var shown = store.getState().keplerGl.map;
  Object.keys(shown ? shown.visState.datasets : {}).forEach(function (id) { store.dispatch(KeplerGl.removeDataset(id)); });
  // a dataset with a header and no rows has nothing to draw (and kepler.gl cannot parse it)
  var datasets = map.datasets.filter(function (d) { return d.csv.trim().indexOf(String.fromCharCode(10)) > 0; })
    .map(function (d) { return {info: {id: d.id, label: d.label}, data: KeplerGl.processCsvData(d.csv)}; });
  setTimeout(function () {
    store.dispatch(KeplerGl.addDataToMap({datasets: datasets, config: map.config, options: {centerMap: false, readOnly: false}}));
  }, 50);
  // Where to look: the data's middle. The map sets its own view when it mounts, so insist until ours holds.
  var target = map.config.config.mapState, held = 0;
  var look = setInterval(function () {
    var now = store.getState().keplerGl.map;
    if (!now) return;
    if (Math.abs(now.mapState.latitude - target.latitude) > 1e-6 || Math.abs(now.mapState.longitude - target.longitude) > 1e-6) {
      held = 0;
      store.dispatch(KeplerGl.updateMap(target));
    } else if (++held >= 3) {
      clearInterval(look);
      window.citylakeReady = true;
    }
  }, 300);
};
