'use strict';
document.getElementById('app').textContent = 'spend-cap';
